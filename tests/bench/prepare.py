#!/usr/bin/python3
"""Benchmark: prepare / exec / release of a cached 10-layer image, against
the same container built by hand (unshare -m, loop-mounted squashfs layers,
overlayfs, pivot_root, in a shell script) and against `podman run` of the
same image from local storage.  Medians and p99 of N runs; never pass/fail.
Then the wall time of --jobs prepares of different jobs one after another
and all at once (median of --rounds), which shows whether prepares run in
parallel.

    sudo tests/bench/prepare.py [--runs 20] [--jobs 20] [--rounds 5] [--build DIR]
    sudo tests/bench/prepare.py --only-concurrency [--build DIR]

Root only (mounts).  Only loopback addresses; everything it starts it stops.
"""
import argparse
import json
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
import images  # noqa: E402
import registry_fixture as rf  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def ms(s):
    return f"{s * 1000:.1f}"


def timed(argv, **kw):
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{argv} failed: {r.stderr}")
    return dt, r.stdout


HELPER = os.path.join("libexec", "alps-nshelper")


def build_alps(build):
    if not os.path.exists(os.path.join(build, "Makefile")):
        os.makedirs(build, exist_ok=True)
        subprocess.run([os.path.join(TOP, "configure"), "-q", "CFLAGS=-O2 -g"], cwd=build,
                       check=True)
    targets = ["alps", "alpsd"]
    # The namespace helper program, in builds that have one (not in older
    # trees measured for comparison, where the daemon forks).
    if subprocess.run(["make", "-n", HELPER], cwd=build, capture_output=True).returncode == 0:
        targets.append(HELPER)
    subprocess.run(["make", "-s", f"-j{os.cpu_count()}"] + targets, cwd=build, check=True,
                   stdout=subprocess.DEVNULL)


def prepare_jobs(alps, ref, jobs, at_once):
    """Wall time to prepare every job (then released, untimed)."""
    argv = alps + ["prepare", "--user", "nobody", "--image", ref, "--job"]
    t0 = time.perf_counter()
    if at_once:
        procs = [subprocess.Popen(argv + [j], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True) for j in jobs]
        for p in procs:
            _, err = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(f"prepare failed: {err}")
    else:
        for j in jobs:
            timed(argv + [j])
    dt = time.perf_counter() - t0
    for j in jobs:
        timed(alps + ["release", "--job", j])
    return dt


def concurrency(alps, ref, njobs, rounds):
    # A job that keeps the layers mounted, as on a node running jobs.
    timed(alps + ["prepare", "--job", "chold", "--user", "nobody", "--image", ref])
    seq, par = [], []
    for r in range(rounds):
        seq.append(prepare_jobs(alps, ref, [f"s{r}-{i}" for i in range(njobs)], False))
        par.append(prepare_jobs(alps, ref, [f"p{r}-{i}" for i in range(njobs)], True))
    timed(alps + ["release", "--job", "chold"])
    print(f"{njobs} prepares of different jobs (cached image), wall time, median of {rounds}")
    print("| how | wall ms | per prepare ms |\n| --- | --- | --- |")
    for name, xs in (("one after another", seq), ("all at once", par)):
        m = statistics.median(xs)
        print(f"| {name} | {ms(m)} | {ms(m / njobs)} |")
    print(f"speed-up of all at once: {statistics.median(seq) / statistics.median(par):.2f}x "
          f"on {os.cpu_count()} CPUs")


def ten_layer_image(work, host):
    layout = rf.build_image(work, "ten", [{f"layer{i}/data": os.urandom(64 << 10)} for i in range(9)])
    images.umoci_modify(layout, "ten", work, images.busybox_root, "bb")
    rf.push(layout, "ten", host, "bench/ten", "v1")
    return layout


def manual_container(layer_files, work, runs):
    """unshare -m + loop mounts + overlay + pivot_root + exec, in sh."""
    script = os.path.join(work, "manual.sh")
    with open(script, "w") as f:
        f.write("""#!/bin/sh
set -e
w=$1; shift
mkdir -p $w/root
i=0; lowers=""
for l in "$@"; do
    mkdir -p $w/l$i; mount -t squashfs -o loop,ro,nosuid,nodev $l $w/l$i
    lowers="$w/l$i${lowers:+:$lowers}"; i=$((i+1))
done
mkdir -p $w/up; mount -t tmpfs tmpfs $w/up; mkdir -p $w/up/u $w/up/w
mount -t overlay overlay -o lowerdir=$lowers,upperdir=$w/up/u,workdir=$w/up/w,nosuid,nodev $w/root
mount -t proc proc $w/root/proc
cd $w/root; mkdir -p old; pivot_root . old; /bin/busybox umount -l /old
exec /bin/true
""")
    os.chmod(script, 0o755)
    times = []
    for i in range(runs):
        d = os.path.join(work, f"m{i}")
        t0 = time.perf_counter()
        subprocess.run(["unshare", "-m", "--propagation", "private", script, d] + layer_files,
                       check=True)
        times.append(time.perf_counter() - t0)
    return times


def podman_runs(ref, runs):
    if shutil.which("podman") is None:
        return None
    root = tempfile.mkdtemp(prefix="alps-bench-podman-")
    base = ["podman", "--root", f"{root}/root", "--runroot", f"{root}/run",
            "--storage-driver", "overlay"]
    try:
        subprocess.run(base + ["pull", "--quiet", "--tls-verify=false", ref], check=True,
                       capture_output=True)
        times = []
        for _ in range(runs):
            # Limits under the hard ones (crun may not raise them) and no
            # cgroup (none is delegated on every machine).
            dt, _ = timed(base + ["run", "--rm", "--net=none", "--ulimit=nofile=1024:1024",
                                  "--ulimit=nproc=1024:1024", "--cgroups=disabled", ref,
                                  "/bin/true"])
            times.append(dt)
        return times
    except RuntimeError as e:
        return str(e).splitlines()[-1][-160:]
    finally:
        subprocess.run(base + ["system", "reset", "--force"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only-concurrency", action="store_true")
    ap.add_argument("--build", default=os.path.join(TOP, "build", "bench"))
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)
    build_alps(a.build)
    alps_bin, alpsd_bin = os.path.join(a.build, "alps"), os.path.join(a.build, "alpsd")
    work = tempfile.mkdtemp(prefix="alps-bench-prep-", dir="/tmp")
    os.chmod(work, 0o755)
    reg = rf.Registry(work).start()
    d = None
    try:
        ten_layer_image(work, reg.host)
        ref = f"{reg.host}/bench/ten:v1"
        sock = os.path.join(work, "s")
        env = dict(os.environ)
        if os.path.exists(os.path.join(a.build, HELPER)):
            env["ALPS_NSHELPER"] = os.path.join(os.path.abspath(a.build), HELPER)
        d = subprocess.Popen([alpsd_bin, "--foreground", "--log-level", "warn", "--socket", sock,
                              "--state-dir", f"{work}/state", "--run-dir", f"{work}/run"], env=env)
        alps = [alps_bin, "--socket", sock]
        # Up when it answers (the socket file exists a little before).
        deadline = time.monotonic() + 30
        while subprocess.run(alps + ["status"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline or d.poll() is not None:
                raise RuntimeError("alpsd did not come up")
            time.sleep(0.05)
        timed(alps + ["pull", "--quiet", ref])
        insp = json.loads(timed(alps + ["--json", "inspect", ref])[1])
        layer_files = [f"{work}/state/layers/{l['digest'].replace(':', '-')}.sqfs"
                       for l in insp["manifest"]["layers"]]
        # Warm: the first prepare mounts the shared layers (once per node).
        timed(alps + ["prepare", "--job", "warm", "--user", "nobody", "--image", ref])
        timed(alps + ["release", "--job", "warm"])
        if a.only_concurrency:
            concurrency(alps, ref, a.jobs, a.rounds)
            return
        prep, ex, rel, direct = [], [], [], []
        timed(alps + ["prepare", "--job", "hold", "--user", "nobody", "--image", ref])
        for i in range(a.runs):
            job = f"b{i}"
            prep.append(timed(alps + ["prepare", "--job", job, "--user", "nobody", "--image", ref])[0])
            ex.append(timed(alps + ["exec", "--job", job, "--", "/bin/true"])[0])
            rel.append(timed(alps + ["release", "--job", job])[0])
            direct.append(timed(["/bin/true"])[0])
        timed(alps + ["release", "--job", "hold"])
        manual = manual_container(layer_files, work, a.runs)
        podman = podman_runs(ref, a.runs)
        rss = 0
        with open(f"/proc/{d.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM"):
                    rss = int(line.split()[1])
        overhead = [e - t for e, t in zip(ex, direct)]
        print(f"{a.runs} runs, 10-layer image ({len(layer_files)} layers), cached, layers mounted")
        print("| step | p50 ms | p99 ms |\n| --- | --- | --- |")
        for name, xs in (("alps prepare", prep), ("alps exec /bin/true (whole client call)", ex),
                         ("  exec overhead over running /bin/true directly", overhead),
                         ("alps release", rel),
                         ("prepare + exec + release", [p + e + r for p, e, r in zip(prep, ex, rel)]),
                         ("shell: unshare -m, 10 loop mounts, overlay, pivot_root, exec", manual)) + \
                (((f"podman run --rm (local storage)", podman),) if isinstance(podman, list) else ()):
            print(f"| {name} | {ms(statistics.median(xs))} | {ms(pct(xs, 99))} |")
        if podman is None:
            print("podman: not installed (apt-get install podman to compare)")
        elif not isinstance(podman, list):
            print(f"podman run could not run here: {podman}")
        print(f"alpsd peak RSS: {rss / 1024:.1f} MiB")
        concurrency(alps, ref, a.jobs, a.rounds)
    finally:
        if d:
            d.terminate()
            d.wait()
        reg.stop()
        with open("/proc/self/mountinfo") as f:
            points = sorted((l.split()[4] for l in f if l.split()[4].startswith(work + "/")),
                            key=len, reverse=True)
        for mp in points:
            subprocess.run(["umount", "-l", mp], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
