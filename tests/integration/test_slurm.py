"""The Slurm path on a real single-node Slurm (slurm_fixture.py): the SPANK
plugin (srun/sbatch --environment, pyxis --container-* options), the
prolog and epilog, tasks that are slurmstepd's own children, run as an
unprivileged user.  Root only (CI is root)."""
import json
import os
import re
import shutil
import tempfile
import time

import pytest

import images
import registry_fixture as rf
import slurm_fixture as sf
from conftest import Daemon, binary, mounts_under


@pytest.fixture(scope="module")
def world(pb, users):
    """A registry with a busybox image, an alpsd that has it, and a Slurm
    node whose plugin and prolog talk to that alpsd."""
    sf.require_slurm()
    rf.require_tools("docker-registry", "umoci", "skopeo", "busybox")
    plugin = binary("alps_spank.so")
    w = type("World", (), {})()
    w.dir = tempfile.mkdtemp(prefix="alps-slurm-", dir="/tmp")
    os.chmod(w.dir, 0o755)
    w.registry = rf.Registry(w.dir).start()
    layout = rf.build_image(w.dir, "bb", [{"etc/base": b"base\n"}],
                            config={"config.env": ["PATH=/bin:/usr/bin", "IMGVAR=image"],
                                    "config.workingdir": "/home"})
    images.umoci_modify(layout, "bb", w.dir, lambda root: images.busybox_root(root), "bb")
    w.layout = layout
    rf.push(layout, "bb", w.registry.host, "test/bb", "v1")
    rf.push(layout, "bb", w.registry.host, "test/bb2", "v1")
    w.ref = f"{w.registry.host}/test/bb:v1"
    w.ref2 = f"{w.registry.host}/test/bb2:v1"
    os.makedirs(os.path.join(w.dir, "d"))
    w.daemon = Daemon(os.path.join(w.dir, "d")).start()
    w.daemon.alps("pull", "--quiet", w.ref, check=True)
    w.daemon.alps("pull", "--quiet", w.ref2, check=True)
    os.makedirs(os.path.join(w.dir, "s"))
    w.slurm = sf.Slurm(os.path.join(w.dir, "s"), binary("alps"), plugin, w.daemon.socket,
                       nodes=2)
    w.users = users
    with sf.running(w):
        yield w


def user_edf(w, user, name, text):
    """An EDF in the user's ~/.edf, owned by the user."""
    return sf.user_edf(user, name, text)


def jobs(w):
    return json.loads(w.daemon.alps("--json", "jobs", check=True).stdout)["jobs"]


def wait_no_jobs(w, timeout=30):
    """The epilog runs after the job ends: wait for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not jobs(w):
            return
        time.sleep(0.2)
    raise AssertionError(f"jobs left after the epilog: {jobs(w)}\n" + open(w.slurm.epilog_log).read())


def test_plain_srun_untouched(world):
    r = world.slurm.run(["srun", "-n", "1", "cat", "/etc/os-release"], user=world.users.victim)
    assert r.returncode == 0, r.stderr
    assert "alps busybox" not in r.stdout
    assert jobs(world) == []


def test_srun_environment(world):
    v = world.users.victim
    user_edf(world, v, "bb.toml", f'image = "{world.ref}"\n[env]\nFROM_EDF = "yes"\n')
    r = world.slurm.run(["srun", "-n", "1", "--environment=bb", "sh", "-c",
                         'cat /etc/os-release; echo "$FROM_EDF $IMGVAR $(id -u) $(pwd)"'],
                        user=v)
    assert r.returncode == 0, r.stderr + world.slurm.logs()
    assert 'NAME="alps busybox"' in r.stdout
    assert f"yes image {v.uid} /home" in r.stdout
    wait_no_jobs(world)
    assert mounts_under(world.daemon.run_dir + "/jobs") == []


def test_srun_container_image_and_mounts(world):
    v = world.users.victim
    data = tempfile.mkdtemp(prefix="alps-data-", dir="/tmp")
    os.chmod(data, 0o755)
    with open(os.path.join(data, "f"), "w") as f:
        f.write("host data\n")
    os.chmod(os.path.join(data, "f"), 0o644)
    try:
        r = world.slurm.run(["srun", "-n", "1", f"--container-image={world.ref}",
                             f"--container-mounts={data}:/data:ro", "--container-workdir=/data",
                             "sh", "-c", "cat f /etc/os-release; touch x"], user=v)
        assert 'host data' in r.stdout and "alps busybox" in r.stdout, r.stderr
        assert r.returncode != 0 and "Read-only" in r.stderr
    finally:
        shutil.rmtree(data)
    wait_no_jobs(world)


def test_tasks_share_one_container_with_slurm_binding(world):
    v = world.users.victim
    user_edf(world, v, "bb.toml", f'image = "{world.ref}"\n')
    ncpu = min(os.cpu_count() or 2, 4)
    script = ('echo "$RANK $LOCAL_RANK $WORLD_SIZE $MASTER_ADDR $MASTER_PORT '
              '$(readlink /proc/self/ns/mnt) $(cat /proc/$PPID/comm) '
              '$(grep Cpus_allowed_list /proc/self/status | tr -d "\\t ")"')
    r = world.slurm.run(["srun", "-n", str(ncpu), "--cpu-bind=map_cpu:" +
                         ",".join(str(i) for i in range(ncpu)), "--environment=bb",
                         "sh", "-c", script], user=v)
    assert r.returncode == 0, r.stderr + world.slurm.logs()
    rows = sorted(l.split() for l in r.stdout.splitlines())
    assert [row[0] for row in rows] == [str(i) for i in range(ncpu)]
    host_ns = os.readlink("/proc/self/ns/mnt")
    assert len({row[5] for row in rows}) == 1 and rows[0][5] != host_ns
    for row in rows:
        rank = int(row[0])
        assert row[1] == str(rank) and row[2] == str(ncpu) and row[3] == sf.Slurm.NODE
        assert 29500 <= int(row[4]) <= 29999
        # The task is slurmstepd's own child, with Slurm's CPU binding.
        assert row[6] == "slurmstepd", row
        assert row[7] == f"Cpus_allowed_list:{rank}", row
    wait_no_jobs(world)


def test_more_tasks_than_cores(world):
    """Slurm may run more tasks than the node has cores (--overcommit): the
    step runs; only the placement variables are left out."""
    v = world.users.victim
    user_edf(world, v, "bb.toml", f'image = "{world.ref}"\n')
    n = 2 * (os.cpu_count() or 2) + 1
    r = world.slurm.run(["srun", "-n", str(n), "-O", "--environment=bb", "sh", "-c",
                         'echo "$RANK $(head -1 /etc/os-release)"'], user=v)
    assert r.returncode == 0, r.stderr
    lines = sorted(r.stdout.splitlines(), key=lambda l: int(l.split()[0]))
    assert [int(l.split()[0]) for l in lines] == list(range(n)), r.stdout + r.stderr
    assert all("alps busybox" in l for l in lines), r.stdout
    wait_no_jobs(world)


def test_env_groups_switched_by_annotation(world):
    """A site's defaults for the task variables can be turned off per
    environment: com.alps.slurm.{rank_env,master_env,placement_env}."""
    v = world.users.victim
    user_edf(world, v, "nomaster.toml", f'image = "{world.ref}"\n[annotations]\n'
             'com.alps.slurm.master_env = "false"\n')
    r = world.slurm.run(["srun", "-n", "1", "--environment=nomaster", "sh", "-c",
                         'echo "R=$RANK M=${MASTER_ADDR:-none} P=${MASTER_PORT:-none}"'], user=v)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "R=0 M=none P=none"
    wait_no_jobs(world)
    bad = user_edf(world, v, "badswitch.toml", f'image = "{world.ref}"\n[annotations]\n'
                   'com.alps.slurm.rank_env = "no"\n')
    r = world.daemon.alps("prepare", "--job", "sw1", "--user", v.name, "--environment", bad)
    assert r.returncode == 1 and "com.alps.slurm.rank_env" in r.stderr and '"no"' in r.stderr
    assert jobs(world) == []


def test_sbatch_steps_share_the_container_script_on_host(world):
    v = world.users.victim
    user_edf(world, v, "bb.toml", f'image = "{world.ref}"\n')
    script = os.path.join(v.home, "job.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n"
                "grep -c 'alps busybox' /etc/os-release > host.txt\n"
                "srun -n 1 sh -c 'echo step1 > /tmp/shared'\n"
                "srun -n 1 cat /tmp/shared > step2.txt\n")
    os.chown(script, v.uid, v.gid)
    out = os.path.join(v.home, "host.txt")
    r = world.slurm.run(["sbatch", "--wait", "--environment=bb", "-o", "slurm.out", script],
                        user=v, timeout=180)
    assert r.returncode == 0, r.stderr + open(os.path.join(v.home, "slurm.out")).read()
    # The batch script ran on the host; its sruns ran in the container.
    assert open(out).read().strip() == "0"
    assert open(os.path.join(v.home, "step2.txt")).read().strip() == "step1"
    wait_no_jobs(world)


def test_bad_edf_fails_at_srun(world):
    v = world.users.victim
    cases = {
        "syntax.toml": ('image = "x"\nmounts = [\n', "syntax.toml:"),
        "unknown.toml": (f'image = "{world.ref}"\nmount = []\n', "did you mean"),
        "undef.toml": (f'image = "{world.ref}"\nworkdir = "${{NOPE_UNSET}}"\n', "NOPE_UNSET"),
        "noimage.toml": ('workdir = "/x"\n', "names no image"),
    }
    for name, (text, want) in cases.items():
        user_edf(world, v, name, text)
        t0 = time.monotonic()
        r = world.slurm.run(["srun", "-n", "1", "--environment=" + name[:-5], "true"], user=v)
        assert r.returncode != 0 and want in r.stderr, (name, r.stderr)
        assert time.monotonic() - t0 < 10
    r = world.slurm.run(["srun", "--container-remap-root", f"--container-image={world.ref}",
                         "true"], user=v)
    assert r.returncode != 0 and "not supported" in r.stderr
    r = world.slurm.run(["srun", "--environment=bb", f"--container-image={world.ref2}", "true"],
                        user=v)
    assert r.returncode != 0 and "already names the image" in r.stderr
    # Nothing was queued, nothing prepared.
    r = world.slurm.run(["squeue", "-h"])
    assert r.stdout.strip() == ""
    assert jobs(world) == []


def test_registry_down_fails_in_prolog_and_leaves_nothing(world):
    v = world.users.victim
    port = sf.free_port()
    user_edf(world, v, "down.toml", f'image = "127.0.0.1:{port}/test/none:v1"\n')
    # Submission could not pin the tag to a digest and went on with the tag.
    r = world.slurm.run(["sbatch", "-H", "-v", "--parsable", "--environment=down", "--wrap",
                         "true"], user=v)
    assert r.returncode == 0, r.stderr
    world.slurm.run(["scancel", r.stdout.strip().split(";")[0]])
    assert re.search(r"alps: image 127\.0\.0\.1:%d/test/none:v1 not pinned to a digest" % port,
                     r.stderr), r.stderr
    r = world.slurm.run(["srun", "-n", "1", "--environment=down", "true"], user=v, timeout=180)
    assert r.returncode != 0
    log = open(world.slurm.prolog_log).read()
    assert re.search(r"alps prolog: job \d+: .*127\.0\.0\.1:%d" % port, log), log
    # Where an admin looks: slurmd's log has the prolog's one line.
    slurmd_log = open(os.path.join(world.slurm.dir, "log", "slurmd.log")).read()
    assert re.search(r"prolog failed: rc:1 output:alps prolog: job \d+: .*127\.0\.0\.1:%d"
                     % port, slurmd_log), slurmd_log[-3000:]
    assert jobs(world) == []
    assert mounts_under(world.daemon.run_dir + "/jobs") == []
    world.slurm.resume()


def test_two_jobs_ports_and_isolation(world):
    v, a = world.users.victim, world.users.attacker
    user_edf(world, v, "bb.toml", f'image = "{world.ref}"\n')
    user_edf(world, a, "bb2.toml", f'image = "{world.ref2}"\n')
    ids = []
    for user, env in ((v, "bb"), (a, "bb2")):
        r = world.slurm.run(["sbatch", "--parsable", "-n", "1", "--environment=" + env,
                             "--wrap", "srun sh -c 'echo $MASTER_PORT' > port.txt; sleep 30"],
                            user=user)
        assert r.returncode == 0, r.stderr
        ids.append(r.stdout.strip().split(";")[0])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(
            os.path.exists(os.path.join(u.home, "port.txt")) and
            open(os.path.join(u.home, "port.txt")).read().strip() for u in (v, a)):
        time.sleep(0.3)
    ports = [open(os.path.join(u.home, "port.txt")).read().strip() for u in (v, a)]
    assert ports[0] != ports[1], ports
    # The attacker can reach neither the victim's container nor its job.
    r = world.daemon.alps("exec", "--job", ids[0], "--", "true", user=a.uid)
    assert r.returncode != 0
    r = world.slurm.run(["srun", "--jobid=" + ids[0], "--overlap", "true"], user=a)
    assert r.returncode != 0
    for i in ids:
        world.slurm.run(["scancel", i])
    wait_no_jobs(world, 60)


def test_epilog_idempotent(world):
    env = {"SLURM_JOB_ID": "999999"}
    for _ in range(2):
        r = world.daemon.alps("epilog", env=env)
        assert r.returncode == 0, r.stderr
    r = world.daemon.alps("prolog", env=env)        # no alps options: nothing to do
    assert r.returncode == 0 and jobs(world) == []
    r = world.daemon.alps("prolog", env=dict(env, SLURM_JOB_UID="0",
                                                      SPANK_ALPS_SPANK_JOB="%%%not base64"))
    assert r.returncode == 1 and "not base64" in r.stderr


def test_plugin_inert_with_daemon_down(world):
    """A plain job works with alpsd down, and its epilog does not fail (a
    failed epilog drains the node)."""
    world.daemon.stop()
    try:
        r = world.slurm.run(["srun", "-n", "1", "sh", "-c", "echo $SLURM_JOB_ID"],
                            user=world.users.victim)
        assert r.returncode == 0, r.stderr
        job = r.stdout.strip()
        deadline = time.monotonic() + 30
        log = world.slurm.epilog_log
        while time.monotonic() < deadline and (not os.path.exists(log) or
                                               f"job {job}: not an alps job" not in open(log).read()):
            time.sleep(0.2)
        time.sleep(1)
        r = world.slurm.run(["sinfo", "-h", "-n", sf.Slurm.NODE, "-o", "%T"])
        assert "drain" not in r.stdout, r.stdout + open(log).read()
    finally:
        world.daemon.start()


def test_attach_is_refused_to_users(world, pb):
    """Attach hands out a job's mount namespace: only root (slurmstepd) may
    ask, whatever job and uid the request names."""
    v, a = world.users.victim, world.users.attacker
    path = user_edf(world, v, "bb.toml", f'image = "{world.ref}"\n')
    world.daemon.alps("prepare", "--job", "att1", "--user", v.name, "--environment", path,
                      check=True)
    script = (
        "import sys; sys.path.insert(0, %r); import alpsclient; alpsclient.load_proto(%r);"
        "c = alpsclient.Conn(%r); r = c.pb.Request(); r.attach.job = 'att1';"
        "r.attach.uid = %d; r.attach.ntasks = 1; resp = c.call(r)[1];"
        "print(resp.status, resp.message)"
    ) % (os.path.dirname(__file__), os.environ.get("ALPS_SRCDIR", "."), world.daemon.socket,
         v.uid)
    r = a.run(["/usr/bin/python3", "-c", script], cwd="/")
    assert r.returncode == 0, r.stderr
    code, msg = r.stdout.split(" ", 1)
    assert int(code) == pb.PERMISSION_DENIED and "administrators" in msg, r.stdout
    world.daemon.alps("release", "--job", "att1", check=True)


def variant(w, name, marker):
    """The busybox image plus /etc/marker, as layout tag name."""
    bundle = os.path.join(w.dir, "bundle-" + name)
    rf.run(["umoci", "unpack", "--image", f"{w.layout.path}:bb", bundle])
    with open(os.path.join(bundle, "rootfs", "etc", "marker"), "w") as f:
        f.write(marker + "\n")
    rf.run(["umoci", "repack", "--image", f"{w.layout.path}:{name}", bundle])
    shutil.rmtree(bundle, ignore_errors=True)


def resolve(w, ref):
    r = w.daemon.alps("--json", "resolve", ref, check=True)
    return json.loads(r.stdout)


def wait_job_gone(w, job, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = w.slurm.run(["squeue", "-h", "-j", job])
        if job not in r.stdout:
            return
        time.sleep(0.3)
    raise AssertionError(f"job {job} still queued:\n" + w.slurm.logs())


def test_image_pinned_at_submission(world):
    """The tag is resolved to a digest when the job is submitted: a job
    that waits in the queue while the tag moves runs the image it was
    submitted with, in the prolog's container and in the sruns of its
    script."""
    w, v = world, world.users.victim
    variant(w, "pin-a", "first")
    variant(w, "pin-b", "second")
    ref = f"{w.registry.host}/test/pin:v1"
    rf.push(w.layout, "pin-a", w.registry.host, "test/pin", "v1")
    first = resolve(w, ref)
    assert first["reference"] == ref and first["pinned"] == ref + "@" + first["digest"]
    user_edf(w, v, "pin.toml", f'image = "{ref}"\n')
    out = os.path.join(v.home, "marker.txt")
    r = w.slurm.run(["sbatch", "--parsable", "-H", "-v", "--environment=pin", "-o", "pin.out",
                     "--wrap", "srun cat /etc/marker > marker.txt"], user=v)
    assert r.returncode == 0, r.stderr
    assert "pinned to " + first["digest"] in r.stderr, r.stderr
    job = r.stdout.strip().split(";")[0]
    rf.push(w.layout, "pin-b", w.registry.host, "test/pin", "v1")       # the tag moves
    second = resolve(w, ref)["digest"]
    assert second != first["digest"]
    w.daemon.alps("pull", "--quiet", ref, check=True)                   # the node has the new one
    w.slurm.run(["scontrol", "release", job])
    wait_job_gone(w, job)
    assert open(out).read().strip() == "first", open(os.path.join(v.home, "pin.out")).read()
    # The pinned job did not roll the node's tag back.
    r = w.daemon.alps("--json", "inspect", ref, check=True)
    assert json.loads(r.stdout)["digest"] == second, r.stdout
    # The store knows a TAG@DIGEST image by its digest (the tag is elsewhere now).
    r = w.daemon.alps("--json", "prepare", "--job", "pinchk", "--user", v.name, "--image",
                      first["pinned"], check=True)
    assert json.loads(r.stdout)["image_digest"] == first["digest"], r.stdout
    w.daemon.alps("release", "--job", "pinchk", check=True)
    # A new submission pins the new digest.
    r = w.slurm.run(["srun", "-v", "--environment=pin", "cat", "/etc/marker"], user=v)
    assert r.returncode == 0 and r.stdout.strip() == "second", r.stderr
    wait_no_jobs(w)
    r = w.daemon.alps("--json", "resolve", f"127.0.0.1:{sf.free_port()}/test/none:v1")
    assert r.returncode == 1 and json.loads(r.stdout)["code"] == "unavailable", r.stdout


def test_batch_in_container_with_plugstack_option(world):
    """plugstack.conf batch=container: the batch script of sbatch
    --environment runs in the container; by default (batch=host) it runs
    on the host.  Slurm's daemons read plugstack.conf at each step."""
    w, v = world, world.users.victim
    user_edf(w, v, "bb.toml", f'image = "{w.ref}"\n')
    conf = os.path.join(w.slurm.dir, "plugstack.conf")
    default = open(conf).read()
    script = "grep -c 'alps busybox' /etc/os-release"
    try:
        with open(conf, "w") as f:
            f.write(default.rstrip("\n") + " batch=container\n")
        r = w.slurm.run(["sbatch", "--wait", "--environment=bb", "-o", "incont.out",
                         "--wrap", script], user=v, timeout=120)
        out = open(os.path.join(v.home, "incont.out")).read()
        assert r.returncode == 0, r.stderr + out + w.slurm.logs()
        assert out.strip().splitlines()[-1] == "1", out
    finally:
        with open(conf, "w") as f:
            f.write(default)
    wait_no_jobs(w)
    r = w.slurm.run(["sbatch", "--wait", "--environment=bb", "-o", "onhost.out", "--wrap",
                     script], user=v, timeout=120)
    out = open(os.path.join(v.home, "onhost.out")).read()
    assert out.strip().splitlines()[-1] == "0", r.stderr + out
    wait_no_jobs(w)


def test_plugstack_default_annotations(world):
    """plugstack.conf env=GROUPS and annotation=KEY=VALUE are every job's
    defaults: the site turns the MASTER_* group off, an environment that
    sets the annotation itself wins, the pyxis options get them too, and a
    malformed argument stops srun with the argument named."""
    w, v = world, world.users.victim
    conf = os.path.join(w.slurm.dir, "plugstack.conf")
    default = open(conf).read()
    probe = 'echo "R=${RANK:-none} M=${MASTER_ADDR:-none}"'
    user_edf(w, v, "plain.toml", f'image = "{w.ref}"\n')
    user_edf(w, v, "wantmaster.toml", f'image = "{w.ref}"\n[annotations]\n'
             'com.alps.slurm.master_env = "true"\n')
    try:
        with open(conf, "w") as f:
            f.write(default.rstrip("\n") + " env=rank annotation=com.alps.slurm.rank_env=true\n")
        r = w.slurm.run(["srun", "-n", "1", "--environment=plain", "sh", "-c", probe], user=v)
        assert r.returncode == 0 and r.stdout.strip() == "R=0 M=none", r.stdout + r.stderr
        wait_no_jobs(w)
        r = w.slurm.run(["srun", "-n", "1", "--environment=wantmaster", "sh", "-c", probe],
                        user=v)
        assert r.returncode == 0 and r.stdout.startswith("R=0 M=") and \
            "M=none" not in r.stdout, r.stdout + r.stderr
        wait_no_jobs(w)
        r = w.slurm.run(["srun", "-n", "1", f"--container-image={w.ref}", "sh", "-c", probe],
                        user=v)
        assert r.returncode == 0 and r.stdout.strip() == "R=0 M=none", r.stdout + r.stderr
        wait_no_jobs(w)
        for bad in ("env=rank,bogus", 'annotation=com.x=a"b', "annotation==x"):
            with open(conf, "w") as f:
                f.write(default.rstrip("\n") + f" {bad}\n")
            r = w.slurm.run(["srun", "-n", "1", "--environment=plain", "true"], user=v)
            assert r.returncode != 0 and "plugstack.conf" in r.stderr, (bad, r.stderr)
    finally:
        with open(conf, "w") as f:
            f.write(default)
    wait_no_jobs(w)
    assert jobs(w) == []


def test_placement_affinity_when_asked(world):
    """com.alps.slurm.affinity = "true" (or slurm.apply_affinity): each
    task runs on the placement plan's CPUs for its local rank, over
    Slurm's --cpu-bind, which stands otherwise."""
    w, v = world, world.users.victim
    ncpu = min(os.cpu_count() or 1, 4)
    if ncpu < 2:
        pytest.skip("needs two CPUs")
    reverse = "map_cpu:" + ",".join(str(ncpu - 1 - i) for i in range(ncpu))
    script = ('echo "$RANK ${ALPS_CPU_AFFINITY:-none} '
              '$(grep Cpus_allowed_list /proc/self/status | tr -d "\\t " | cut -d: -f2)"')
    user_edf(w, v, "aff.toml", f'image = "{w.ref}"\n[annotations]\n'
             'com.alps.slurm.affinity = "true"\n')
    user_edf(w, v, "bb.toml", f'image = "{w.ref}"\n')
    rows = {}
    for edf in ("aff", "bb"):
        r = w.slurm.run(["srun", "-n", str(ncpu), "--cpu-bind=" + reverse,
                         "--environment=" + edf, "sh", "-c", script], user=v)
        assert r.returncode == 0, r.stderr
        rows[edf] = sorted(l.split() for l in r.stdout.splitlines())
        wait_no_jobs(w)
    slurm = [str(ncpu - 1 - i) for i in range(ncpu)]
    # Asked: the plan's CPUs, as the task itself reads them.
    assert [row[0] for row in rows["aff"]] == [str(i) for i in range(ncpu)]
    assert all(row[1] == row[2] for row in rows["aff"]), rows
    assert [row[2] for row in rows["aff"]] != slurm, rows
    # Not asked: Slurm's binding, no variable.
    assert [row[1:] for row in rows["bb"]] == [["none", c] for c in slurm], rows


def test_two_nodes(world):
    """Two slurmd on this host (Debian's Slurm runs several with slurmd -N
    and a Port= each): a job on both, one alpsd serving both "nodes".
    Every node's prolog prepares the job; the ranks differ, MASTER_ADDR
    and MASTER_PORT are the same on both."""
    w, v = world, world.users.victim
    user_edf(w, v, "bb.toml", f'image = "{w.ref}"\n')
    r = w.slurm.run(["srun", "-p", "multi", "-N", "2", "-n", "2", "--environment=bb", "sh", "-c",
                     'echo "$RANK $LOCAL_RANK $WORLD_SIZE $MASTER_ADDR $MASTER_PORT '
                     '$SLURMD_NODENAME $(grep -c \'alps busybox\' /etc/os-release)"'], user=v)
    assert r.returncode == 0, r.stderr + w.slurm.logs()
    rows = sorted(l.split() for l in r.stdout.splitlines())
    assert [row[0] for row in rows] == ["0", "1"], rows
    assert [row[5] for row in rows] == ["alpsn1", "alpsn2"], rows
    for row in rows:
        assert row[1] == "0" and row[2] == "2" and row[3] == "alpsn1" and row[6] == "1", row
    assert rows[0][4] == rows[1][4], rows
    wait_no_jobs(w)
