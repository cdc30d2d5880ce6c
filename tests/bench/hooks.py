#!/usr/bin/python3
"""Benchmark: `alps prepare` with every library hook on (CXI, the NCCL
plugin, MPI; fake host stacks made with cc, as the tests make them) for the
first job of an image on the node (the injection cache is emptied before
each: copies and the image's ldconfig) and for the next jobs (the cache
entry reused), against the same prepare with no hook.  A job holds the
layers mounted throughout, as on a node running jobs.  Medians and p90 of N
runs, the three kinds interleaved; never pass/fail.

    sudo tests/bench/hooks.py [--runs 15] [--build DIR]

Root only (mounts).  Only loopback addresses; everything it starts it stops.
"""
import argparse
import glob
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
sys.path.insert(0, HERE)
import images  # noqa: E402
import registry_fixture as rf  # noqa: E402
from prepare import HELPER, build_alps, ms, pct, timed  # noqa: E402
from test_hooks import _stack  # noqa: E402
from test_hooks_mpi import MULTI, _mpich  # noqa: E402

ENTER = os.path.join("libexec", "alps-enter")


def host_stack(work):
    host = os.path.join(work, "host")
    _stack(f"{host}/lib", "host")
    os.makedirs(f"{host}/pmi")
    with open(f"{host}/pmi/pmi.c", "w") as f:
        f.write('const char *pmi_who(void) { return "pmi"; }\n')
    subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-soname,libpmi.so.0", "-o",
                    f"{host}/pmi/libpmi.so.0", f"{host}/pmi/pmi.c"], check=True)
    _mpich(f"{host}/mpi", "host", "libmpi.so.12.5.0", pmi=f"{host}/pmi")
    os.makedirs(f"{host}/nccl")
    with open(f"{host}/nccl/p.c", "w") as f:
        f.write("int nccl_plugin;\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-soname,libnccl-net.so", "-o",
                    f"{host}/nccl/libnccl-net.so", f"{host}/nccl/p.c"], check=True)
    return host


def image(work, host):
    """busybox, glibc's loader, libc and ldconfig, an MPICH 12.1.1."""
    img = os.path.join(work, "img")
    _mpich(f"{img}{MULTI}", "image", "libmpi.so.12.1.1")

    def content(root):
        images.busybox_root(root)
        shutil.copytree(img, root, dirs_exist_ok=True, symlinks=True)
        for lib in ("/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6",
                    "/lib/x86_64-linux-gnu/libm.so.6"):
            os.makedirs(os.path.dirname(root + lib), exist_ok=True)
            shutil.copy(os.path.realpath(lib), root + lib)
        os.makedirs(f"{root}/sbin", exist_ok=True)
        shutil.copy("/sbin/ldconfig", f"{root}/sbin/ldconfig")
        subprocess.run(["ldconfig", "-r", root], check=True)

    layout = rf.build_image(work, "hk", [{"etc/base": b"base\n"}])
    images.umoci_modify(layout, "hk", work, content, "hk")
    return layout


def config(host):
    return f"""[hooks]
lib_dir = "/opt/alps/lib"
[hooks.cxi]
libraries = {json.dumps([f"{host}/lib/libfabric.so.1", f"{host}/lib/libcxi.so.1"])}
devices = []
[hooks.aws_ofi_nccl]
variants = ["cuda12={host}/nccl/libnccl-net.so"]
[hooks.mpi]
libraries = ["{host}/mpi/libmpi.so.12"]
dependencies = ["{host}/pmi/libpmi.so.0"]
"""


def edf(work, ref, name, hooks):
    path = os.path.join(work, f"{name}.toml")
    with open(path, "w") as f:
        f.write(f'image = "{ref}"\n')
        if hooks:
            f.write('[annotations]\n"com.hooks.cxi.enabled" = "true"\n'
                    '"com.hooks.aws_ofi_nccl.enabled" = "true"\n'
                    '"com.hooks.aws_ofi_nccl.variant" = "cuda12"\n'
                    '"com.hooks.mpi.enabled" = "true"\n')
        else:
            f.write('[annotations]\n"com.hooks.cxi.enabled" = "false"\n')
    os.chmod(path, 0o644)
    return path


def start(build, work, host):
    sock = os.path.join(work, "s")
    with open(f"{work}/alpsd.conf", "w") as f:
        f.write(config(host))
    env = dict(os.environ, ALPS_NSHELPER=os.path.join(build, HELPER),
               ALPS_ENTER_PATH=os.path.join(build, ENTER))
    d = subprocess.Popen([os.path.join(build, "alpsd"), "--foreground", "--log-level", "warn",
                          "--config", f"{work}/alpsd.conf", "--socket", sock, "--state-dir",
                          f"{work}/state", "--run-dir", f"{work}/run"], env=env)
    alps = [os.path.join(build, "alps"), "--socket", sock]
    deadline = time.monotonic() + 30
    while subprocess.run(alps + ["status"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline or d.poll() is not None:
            raise RuntimeError("alpsd did not come up")
        time.sleep(0.05)
    return d, alps


def prepare_release(alps, e, job):
    dt = timed(alps + ["prepare", "--job", job, "--user", "nobody", "--environment", e])[0]
    timed(alps + ["release", "--job", job])
    return dt


def measure(alps, work, on, off, runs):
    """Interleaved, so that a change of the machine's load hits all three."""
    none, first, nxt = [], [], []
    for i in range(runs):
        none.append(prepare_release(alps, off, f"n{i}"))
        for entry in glob.glob(f"{work}/state/injcache/*"):
            shutil.rmtree(entry)
        first.append(prepare_release(alps, on, f"f{i}"))
        nxt.append(prepare_release(alps, on, f"x{i}"))
    return [("no hook", none), ("every hook, first job on the node (cache built)", first),
            ("every hook, next job (cache reused)", nxt)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--build", default=os.path.join(TOP, "build", "bench"))
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)
    build_alps(a.build)
    # The image's ldconfig starts through alps-enter.
    subprocess.run(["make", "-s", ENTER], cwd=a.build, check=True, stdout=subprocess.DEVNULL)
    work = tempfile.mkdtemp(prefix="alps-bench-hooks-", dir="/tmp")
    os.chmod(work, 0o755)
    reg = rf.Registry(work).start()
    d = None
    try:
        host = host_stack(work)
        rf.push(image(work, host), "hk", reg.host, "bench/hk", "v1")
        ref = f"{reg.host}/bench/hk:v1"
        d, alps = start(a.build, work, host)
        timed(alps + ["pull", "--quiet", ref])
        on, off = edf(work, ref, "on", True), edf(work, ref, "off", False)
        timed(alps + ["prepare", "--job", "hold", "--user", "nobody", "--environment", off])
        rows = measure(alps, work, on, off, a.runs)
        timed(alps + ["release", "--job", "hold"])
        base = statistics.median(rows[0][1])
        print(f"alps prepare, {a.runs} runs each, layers mounted, "
              f"CXI + NCCL plugin + MPI (5 libraries, ldconfig of a glibc image)")
        print("| prepare | p50 ms | p90 ms | p50 / no hook |\n| --- | ---: | ---: | ---: |")
        for name, xs in rows:
            m = statistics.median(xs)
            print(f"| {name} | {ms(m)} | {ms(pct(xs, 90))} | {m / base:.2f}x |")
        print(f"first / next job with hooks: "
              f"{statistics.median(rows[1][1]) / statistics.median(rows[2][1]):.2f}x")
    finally:
        if d:
            d.terminate()
            d.wait()
        reg.stop()
        with open("/proc/self/mountinfo") as f:
            points = sorted((m.split()[4] for m in f if m.split()[4].startswith(work + "/")),
                            key=len, reverse=True)
        for mp in points:
            subprocess.run(["umount", "-l", mp], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
