#!/usr/bin/env python3
"""Pull throughput and thread count of alpsd builds, compared.

    tests/bench/pool_bench.py CACHE_DIR NAME=BUILD_DIR... [--runs N]

Builds (once, kept in CACHE_DIR/registry) two unrelated four-layer images,
bench/pool:a and bench/pool:b, each ~100 MB uncompressed (per layer a
random "weights" file, compressible text files, and a few hundred small
files), served by a docker-registry on loopback.  Then, N rounds, each
build in turn with a fresh, empty store and its default configuration:
  cold   `alps pull` of :a alone (client start to exit)
  two    `alps pull` of :a and of :b at the same time (until both exit)
and the most threads alpsd had meanwhile (/proc/PID/status, sampled every
10 ms).  Prints one JSON line per measurement and a median summary.  The
page cache is not dropped: the registry's blobs are cached alike for all."""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import registry_fixture as rf  # noqa: E402

FORMAT = 1              # bump when the images' recipe changes
MB = 1 << 20


def layer_files(seed, n):
    """One layer: incompressible, compressible and many small files."""
    rng = random.Random(f"{seed}-{n}")
    files = {f"data/{n}/weights.bin": rng.randbytes(12 * MB)}
    words = [f"w{rng.randrange(5000)}" for _ in range(4096)]
    for i in range(8):
        text = "\n".join(" ".join(rng.choices(words, k=12)) for _ in range(18000))
        files[f"data/{n}/table{i}.csv"] = text.encode()
    for i in range(300):
        files[f"lib/{n}/mod{i}.py"] = rng.randbytes(rng.randrange(512, 16384))
    return files


def build_images(cache):
    stamp = os.path.join(cache, "images.json")
    if os.path.exists(stamp) and json.load(open(stamp)).get("format") == FORMAT:
        return
    storage = os.path.join(cache, "registry")
    work = tempfile.mkdtemp(prefix="alps-pool-img-", dir="/tmp")
    reg = rf.Registry(work, storage_dir=storage).start()
    try:
        for tag in ("a", "b"):
            layout = rf.build_image(os.path.join(work, tag), tag,
                                    [layer_files(tag, n) for n in range(4)])
            rf.push(layout, tag, reg.host, "bench/pool", tag)
    finally:
        reg.stop()
        subprocess.run(["rm", "-rf", work])
    with open(stamp, "w") as f:
        json.dump({"format": FORMAT}, f)


class Daemon:
    def __init__(self, build, tmp):
        self.build, self.dir = build, tempfile.mkdtemp(prefix="d-", dir=tmp)
        self.sock = os.path.join(self.dir, "s")
        open(os.path.join(self.dir, "c.conf"), "w").close()
        self.log = open(os.path.join(self.dir, "log"), "wb")
        self.proc = subprocess.Popen(
            [os.path.join(build, "alpsd"), "--foreground", "--config",
             os.path.join(self.dir, "c.conf"), "--socket", self.sock, "--state-dir",
             os.path.join(self.dir, "st"), "--run-dir", os.path.join(self.dir, "run")],
            stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(500):
            if os.path.exists(self.sock):
                return
            time.sleep(0.01)
        raise RuntimeError("alpsd did not start")

    def threads(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("Threads:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def pulls(self, refs):
        """Wall seconds until every pull of refs (at once) ended; peak threads."""
        peak, done = [0], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], self.threads())
                time.sleep(0.01)

        t = threading.Thread(target=sample)
        t.start()
        t0 = time.monotonic()
        procs = [subprocess.Popen([os.path.join(self.build, "alps"), "--socket", self.sock,
                                   "pull", "--quiet", r], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE) for r in refs]
        errs = [p.communicate()[1] for p in procs]
        wall = time.monotonic() - t0
        done.set()
        t.join()
        for p, e in zip(procs, errs):
            if p.returncode != 0:
                raise RuntimeError(f"pull failed: {e.decode(errors='replace')}")
        return wall, peak[0]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()
        subprocess.run(["rm", "-rf", self.dir])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cache")
    ap.add_argument("builds", nargs="+", help="NAME=BUILD_DIR with alpsd and alps")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    builds = [b.split("=", 1) for b in a.builds]
    os.makedirs(a.cache, exist_ok=True)
    build_images(a.cache)
    tmp = tempfile.mkdtemp(prefix="alps-pool-", dir="/tmp")
    reg = rf.Registry(tmp, storage_dir=os.path.join(a.cache, "registry")).start()
    ref = f"{reg.host}/bench/pool"
    res = {}
    try:
        for run in range(a.runs):
            for name, build in builds:
                for kind, refs in (("cold", [f"{ref}:a"]), ("two", [f"{ref}:a", f"{ref}:b"])):
                    d = Daemon(build, tmp)
                    try:
                        wall, peak = d.pulls(refs)
                    finally:
                        d.stop()
                    print(json.dumps({"build": name, "kind": kind, "run": run,
                                      "wall_s": round(wall, 2), "peak_threads": peak}),
                          flush=True)
                    res.setdefault((name, kind), []).append((wall, peak))
    finally:
        reg.stop()
        subprocess.run(["rm", "-rf", tmp])
    print(f"{'build':12} {'kind':5} {'median s':>9} {'min s':>7} {'peak threads':>13}")
    for (name, kind), v in res.items():
        walls = [w for w, _ in v]
        print(f"{name:12} {kind:5} {statistics.median(walls):9.2f} {min(walls):7.2f} "
              f"{max(p for _, p in v):13d}")


if __name__ == "__main__":
    main()
