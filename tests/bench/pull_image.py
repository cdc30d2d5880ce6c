#!/usr/bin/env python3
"""Build the pull benchmark's image into a cached registry storage.

    tests/bench/pull_image.py CACHE_DIR [--scale F] [--force]

CACHE_DIR/registry/ becomes a docker-registry storage directory holding
bench/pull:v1 and bench/pull:v2 (OCI manifests, gzip layers, built with
umoci and pushed with skopeo); CACHE_DIR/image.json describes them (layer
digests and sizes, how the base was made).  A cache whose image.json matches
the parameters is kept as it is, so reruns skip the build.

Layers of v1, bottom to top:
  1. base     `debootstrap --variant=minbase bookworm` from deb.debian.org;
              if the archive cannot be reached: a copy of the host's /etc,
              /var/lib/dpkg and part of /usr (image.json says which).
  2. python   the host's /usr/lib/python3.11 and /usr/lib/python3/dist-packages
              plus Debian's scientific Python packages (numpy, scipy, pandas,
              matplotlib, scikit-learn, sympy, OpenBLAS), unpacked with dpkg -x
              from `apt-get download` (skipped if apt cannot download).
  3. data     incompressible "weights" (large random files) and "shards"
              (many 100 KiB random files), and compressible CSV tables.
  4. app      a small top layer (a 4 MiB binary and a few text files).
v2 shares layers 1-3 and has a different app layer.

--scale multiplies the data layer's size (1.0: ~1.1 GB; the whole image is
then ~1.7 GB uncompressed, ~1.1 GB gzip).  Everything runs on loopback; the
registry is stopped by PID; the work directory is removed.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

LOOPBACK = "127.0.0.1"
REPO = "bench/pull"
FORMAT = 3              # bump when the image's recipe changes
PY_DEBS = ["python3-numpy", "python3-scipy", "python3-pandas", "python3-pandas-lib",
           "python3-matplotlib", "python3-sklearn", "python3-sklearn-lib", "python3-sympy",
           "libopenblas0-pthread", "libgfortran5", "liblapack3", "libblas3"]
FALLBACK_BASE = ["/etc", "/var/lib/dpkg", "/usr/bin", "/usr/sbin", "/usr/lib/x86_64-linux-gnu",
                 "/usr/lib/locale", "/usr/share/zoneinfo", "/usr/share/perl5"]
MB = 1 << 20


def log(msg):
    print(f"pull_image: {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n"
                           f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r


def free_port():
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def start_registry(storage, workdir, port=None):
    """docker-registry on 127.0.0.1:port serving storage; returns (proc, port)."""
    port = port or free_port()
    os.makedirs(workdir, exist_ok=True)
    cfg = os.path.join(workdir, "registry.yml")
    with open(cfg, "w") as f:
        f.write("\n".join([
            "version: 0.1", "log:", "  level: warn", "  accesslog:", "    disabled: false",
            "storage:", "  filesystem:", f"    rootdirectory: {storage}",
            "  delete:", "    enabled: true", "http:", f"  addr: {LOOPBACK}:{port}",
            "  secret: alps-bench-secret", ""]))
    logf = open(os.path.join(workdir, "registry.log"), "ab")
    proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=logf,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    logf.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("docker-registry exited; see " + workdir + "/registry.log")
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError("docker-registry did not listen")


def stop(proc):
    """Stop one process we started, by its PID."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()



# ---------------------------------------------------------------- layers

def make_base(root):
    """debootstrap minbase; the host's files if the archive is unreachable."""
    try:
        run(["debootstrap", "--variant=minbase", "bookworm", root, "http://deb.debian.org/debian"],
            timeout=900)
        return "debootstrap --variant=minbase bookworm (deb.debian.org)"
    except Exception as e:          # noqa: no network, no debootstrap, ...
        log(f"debootstrap failed, using the host's files as the base: {str(e)[:300]}")
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        for p in FALLBACK_BASE:
            if os.path.exists(p):
                os.makedirs(os.path.dirname(root + p), exist_ok=True)
                run(["cp", "-a", p, root + p])
        for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):
            os.symlink(target, os.path.join(root, link))
        return "copy of the host's " + " ".join(FALLBACK_BASE)


def make_python(root, work):
    for p in ("/usr/lib/python3.11", "/usr/lib/python3/dist-packages"):
        if os.path.isdir(p):
            os.makedirs(os.path.dirname(root + p), exist_ok=True)
            run(["cp", "-a", p, root + p])
    debs = os.path.join(work, "debs")
    os.makedirs(debs)
    try:
        run(["apt-get", "download"] + PY_DEBS, cwd=debs, timeout=900)
    except Exception as e:      # noqa
        log(f"apt-get download failed, Python layer without Debian packages: {str(e)[:300]}")
        return "host Python only"
    for f in sorted(os.listdir(debs)):
        run(["dpkg", "-x", os.path.join(debs, f), root])
    shutil.rmtree(debs)
    return "host Python + " + " ".join(PY_DEBS)


def write_random(path, size, rng):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MB)
            f.write(rng.randbytes(n))
            left -= n


def make_data(root, scale, seed=1):
    """~1100 MB at scale 1: 640 MB of large random files, 160 MB of small
    random files, 300 MB of CSV text (compresses ~3x)."""
    rng = random.Random(seed)
    d = os.path.join(root, "opt", "data")
    for sub in ("weights", "shards", "tables"):
        os.makedirs(os.path.join(d, sub))
    for i in range(10):
        write_random(os.path.join(d, "weights", f"part-{i:02d}.bin"), int(64 * MB * scale), rng)
    for i in range(int(1600 * scale)):
        write_random(os.path.join(d, "shards", f"{i // 100:02d}-{i % 100:02d}.rec"), 100 * 1024, rng)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota",
             "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau"]
    for i in range(100):
        target = int(3 * MB * scale)
        rows, size, n = [], 0, 0
        rows.append("id,station,time,temperature,pressure,humidity,flag\n")
        while size < target:
            line = "%d,%s-%d,%d,%.3f,%.2f,%.1f,%s\n" % (
                n, rng.choice(words), rng.randrange(200), 1700000000 + n * 60 + rng.randrange(60),
                rng.gauss(15, 8), rng.gauss(1013, 12), rng.uniform(0, 100), rng.choice("ABCD"))
            rows.append(line)
            size += len(line)
            n += 1
        with open(os.path.join(d, "tables", f"table-{i:03d}.csv"), "w") as f:
            f.writelines(rows)


def make_app(root, version, seed):
    rng = random.Random(seed)
    d = os.path.join(root, "opt", "app")
    os.makedirs(os.path.join(d, "bin"))
    os.makedirs(os.path.join(d, "etc"))
    write_random(os.path.join(d, "bin", "solver"), 4 * MB, rng)
    os.chmod(os.path.join(d, "bin", "solver"), 0o755)
    with open(os.path.join(d, "etc", "app.toml"), "w") as f:
        f.write(f'version = "{version}"\nthreads = 64\n')
    with open(os.path.join(d, "bin", "run.sh"), "w") as f:
        f.write(f"#!/bin/sh\n# app {version}\nexec /opt/app/bin/solver \"$@\"\n")
    os.chmod(os.path.join(d, "bin", "run.sh"), 0o755)


def add_layer(layout, tag, root, work, name):
    """tar root (GNU tar, pax, sorted, numeric owners, xattrs) and add it to
    tag with umoci raw add-layer (which gzips it)."""
    tar = os.path.join(work, f"{name}.tar")
    run(["tar", "--format=pax", "--sort=name", "--numeric-owner", "--xattrs",
         "--xattrs-include=*", "-C", root, "-cf", tar, "."])
    size = os.path.getsize(tar)
    run(["umoci", "raw", "add-layer", "--image", f"{layout}:{tag}",
         "--history.created_by", f"pull benchmark: {name}", tar])
    os.unlink(tar)
    shutil.rmtree(root)
    return size


def blob_path(layout, digest):
    return os.path.join(layout, "blobs", *digest.split(":", 1))


def manifest(layout, tag):
    with open(os.path.join(layout, "index.json")) as f:
        for m in json.load(f)["manifests"]:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                with open(blob_path(layout, m["digest"])) as g:
                    return m["digest"], json.load(g)
    raise KeyError(tag)


# ---------------------------------------------------------------- main

def build(cache, scale):
    work = tempfile.mkdtemp(prefix="alps-bench-pull-build-", dir="/tmp")
    reg = None
    try:
        layout = os.path.join(work, "oci")
        info = {"format": FORMAT, "scale": scale, "repo": REPO, "layers": {}}
        t0 = time.monotonic()
        run(["umoci", "init", "--layout", layout])
        run(["umoci", "new", "--image", f"{layout}:stage"])
        run(["umoci", "config", "--image", f"{layout}:stage", "--config.cmd", "/bin/bash",
             "--config.env", "PATH=/opt/app/bin:/usr/local/bin:/usr/bin:/bin",
             "--config.label", "org.opencontainers.image.title=alps pull benchmark"])
        uncompressed = {}
        log("base layer (debootstrap)...")
        info["base"] = make_base(os.path.join(work, "base"))
        uncompressed["base"] = add_layer(layout, "stage", os.path.join(work, "base"), work, "base")
        log("python layer...")
        info["python"] = make_python(os.path.join(work, "python"), work)
        uncompressed["python"] = add_layer(layout, "stage", os.path.join(work, "python"), work,
                                           "python")
        log("data layer...")
        make_data(os.path.join(work, "data"), scale)
        uncompressed["data"] = add_layer(layout, "stage", os.path.join(work, "data"), work, "data")
        for tag, seed in (("v1", 11), ("v2", 22)):
            run(["umoci", "tag", "--image", f"{layout}:stage", tag])
            make_app(os.path.join(work, f"app-{tag}"), tag, seed)
            uncompressed[f"app-{tag}"] = add_layer(layout, tag, os.path.join(work, f"app-{tag}"),
                                                   work, f"app-{tag}")
        run(["umoci", "rm", "--image", f"{layout}:stage"])
        run(["umoci", "gc", "--layout", layout])
        log(f"layers built in {time.monotonic() - t0:.0f} s; pushing...")

        storage = os.path.join(cache, "registry")
        shutil.rmtree(storage, ignore_errors=True)
        os.makedirs(storage)
        reg, port = start_registry(storage, work)
        for tag in ("v1", "v2"):
            run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                 f"oci:{layout}:{tag}", f"docker://{LOOPBACK}:{port}/{REPO}:{tag}"])
        names = ["base", "python", "data"]
        for tag in ("v1", "v2"):
            digest, m = manifest(layout, tag)
            layers = []
            for i, l in enumerate(m["layers"]):
                name = names[i] if i < 3 else f"app-{tag}"
                layers.append({"name": name, "digest": l["digest"], "media_type": l["mediaType"],
                               "compressed": l["size"], "uncompressed": uncompressed[name]})
            info["layers"][tag] = {"manifest": digest, "layers": layers,
                                   "compressed": sum(l["compressed"] for l in layers),
                                   "uncompressed": sum(l["uncompressed"] for l in layers)}
        with open(os.path.join(cache, "image.json"), "w") as f:
            json.dump(info, f, indent=1)
        log(f"image built and pushed in {time.monotonic() - t0:.0f} s")
        return info
    finally:
        stop(reg)
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cache")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.cache, exist_ok=True)
    stamp = os.path.join(a.cache, "image.json")
    if not a.force and os.path.exists(stamp) and os.path.isdir(os.path.join(a.cache, "registry")):
        with open(stamp) as f:
            info = json.load(f)
        if info.get("format") == FORMAT and info.get("scale") == a.scale:
            log(f"cached image in {a.cache}")
            return
    for tool in ("docker-registry", "umoci", "skopeo", "tar"):
        if shutil.which(tool) is None:
            sys.exit(f"pull_image: {tool} is not installed")
    build(a.cache, a.scale)


if __name__ == "__main__":
    main()
