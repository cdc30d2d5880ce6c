#!/usr/bin/python3
"""Benchmark: Slurm step start with and without alps, on a real
single-node Slurm (tests/integration/slurm_fixture.py).  Each kind runs N
times, interleaved, inside one long allocation per kind (`srun --jobid
--overlap`), so only the step start is measured:

  plain      srun -n 8 -O true
  prepared   srun -n 8 -O --environment=bb true   in a job the prolog prepared
  at-step    srun -n 8 -O --environment=bb --container-name=rK true
             in a job without alps: the container is prepared at step start
             (image cached), a new one each run

Medians and p90 in ms; never pass/fail.  Root only.

    tests/bench/slurm_step.py [--runs 20] [--build DIR]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "integration"))
os.environ.setdefault("ALPS_SRCDIR", TOP)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--build", default=os.path.join(TOP, "build", "dev"))
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    os.environ["ALPS_BUILDDIR"] = os.path.abspath(args.build)
    import alpsclient
    import images
    import registry_fixture as rf
    import slurm_fixture as sf
    from conftest import Daemon, _make_user, unmount_under

    alpsclient.load_proto(TOP)
    d = tempfile.mkdtemp(prefix="alps-bench-", dir="/tmp")
    os.chmod(d, 0o755)
    reg = rf.Registry(d).start()
    daemon = slurm = None
    # Jobs do not run as root: a user of the benchmark's own.
    user = _make_user("b")
    try:
        layout = rf.build_image(d, "bb", [{"etc/base": b"base\n"}],
                                config={"config.env": ["PATH=/bin:/usr/bin"]})
        images.umoci_modify(layout, "bb", d, images.busybox_root, "bb")
        rf.push(layout, "bb", reg.host, "bench/bb", "v1")
        ref = f"{reg.host}/bench/bb:v1"
        os.makedirs(f"{d}/d")
        daemon = Daemon(f"{d}/d").start()
        daemon.alps("pull", "--quiet", ref, check=True)
        edf_dir = f"{user.home}/.edf"
        os.makedirs(edf_dir)
        with open(f"{edf_dir}/bb.toml", "w") as f:
            f.write(f'image = "{ref}"\n')
        for p in (edf_dir, f"{edf_dir}/bb.toml"):
            os.chown(p, user.uid, user.gid)
        os.makedirs(f"{d}/s")
        slurm = sf.Slurm(f"{d}/s", os.path.join(args.build, "alps"),
                         os.path.join(args.build, "alps_spank.so"), daemon.socket).start()
        env = {}

        def alloc(*opts):
            r = slurm.run(["sbatch", "--parsable", "-n", "1", "-O", *opts, "--wrap",
                           "sleep 3600"], user=user)
            assert r.returncode == 0, r.stderr
            job = r.stdout.strip().split(";")[0]
            for _ in range(300):
                if slurm.run(["squeue", "-h", "-j", job, "-o", "%T"]).stdout.strip() == "RUNNING":
                    return job
                time.sleep(0.1)
            raise RuntimeError("job did not start: " + open(slurm.prolog_log).read() + slurm.run(
                ["squeue", "-h", "-o", "%i %T %r"]).stdout + slurm.logs()[-1500:])

        plain_job = alloc()
        alps_job = alloc("--environment=bb")
        kinds = {
            "plain": lambda k: ["srun", f"--jobid={plain_job}", "--overlap", "-n", "8", "-O",
                                "true"],
            "prepared": lambda k: ["srun", f"--jobid={alps_job}", "--overlap", "-n", "8",
                                   "-O", "--environment=bb", "true"],
            "at-step": lambda k: ["srun", f"--jobid={plain_job}", "--overlap", "-n", "8", "-O",
                                  "--environment=bb", f"--container-name=r{k}", "true"],
        }
        times = {k: [] for k in kinds}
        for i in range(args.runs):
            for name, argv in kinds.items():
                t0 = time.perf_counter()
                r = slurm.run(argv(i), user=user)
                dt = time.perf_counter() - t0
                # srun exits 0 even when a task's launch failed: read it.
                if r.returncode != 0 or "launch failed" in r.stderr:
                    raise RuntimeError(f"{name} run {i}: {r.stderr}" + slurm.run(
                        ["squeue", "-h", "-o", "%i %T %r"]).stdout + f" jobs {plain_job} {alps_job}" + slurm.logs())
                times[name].append(dt)
        base = statistics.median(times["plain"])
        print(f"slurm step start, srun -n 8, {args.runs} runs each, interleaved")
        print(f"{'kind':10} {'median ms':>10} {'p90 ms':>8} {'over plain':>11}")
        for name, xs in times.items():
            med = statistics.median(xs)
            print(f"{name:10} {med * 1000:10.1f} {pct(xs, 90) * 1000:8.1f} "
                  f"{(med - base) * 1000:+10.1f}")
    finally:
        if slurm:
            # Every job ended (and its epilog run) before slurmd stops, or
            # their batch steps would outlive it.
            slurm.run(["scancel", "--full", "--user", user.name])
            for _ in range(300):
                if not slurm.run(["squeue", "-h"]).stdout.strip():
                    break
                time.sleep(0.1)
            slurm.stop()
        if daemon:
            daemon.alps("epilog", env={"SLURM_JOB_ID": "0"})
            daemon.stop()
        reg.stop()
        subprocess.run(["userdel", "-r", "-f", user.name], capture_output=True)
        unmount_under(d)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
