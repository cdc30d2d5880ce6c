"""Job containers: prepare (prolog), exec, run, release (epilog) against a
real alpsd, a real registry and real mounts.  Root only (CI is root)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import images
import registry_fixture as rf
from conftest import binary, mounts_under

NOBODY = 65534


@pytest.fixture(scope="module")
def bbworld(tmp_path_factory):
    rf.require_tools("docker-registry", "umoci", "skopeo", "busybox")
    if os.geteuid() != 0:
        pytest.skip("job containers need root")
    w = type("World", (), {})()
    w.dir = tmp_path_factory.mktemp("jobworld")
    os.chmod(w.dir, 0o755)
    w.registry = rf.Registry(w.dir).start()
    layout = rf.build_image(w.dir, "bb", [{"etc/base": b"base\n"}],
                            config={"config.env": ["IMGVAR=image", "BOTH=image",
                                                   "PATH=/bin:/usr/bin"],
                                    "config.workingdir": "/home"})

    def content(root):
        images.busybox_root(root)
        os.makedirs(f"{root}/opt/work", exist_ok=True)
        os.chmod(f"{root}/opt/work", 0o777)
        # A setuid-root copy of busybox: must not give anyone root inside.
        import shutil
        # (named busybox: that is how busybox knows to take argv[1] as the applet)
        os.makedirs(f"{root}/opt/suid")
        shutil.copy(f"{root}/bin/busybox", f"{root}/opt/suid/busybox")
        os.chmod(f"{root}/opt/suid/busybox", 0o4755)

    images.umoci_modify(layout, "bb", w.dir, content, "bb")
    rf.push(layout, "bb", w.registry.host, "test/bb", "v1")
    w.ref = f"{w.registry.host}/test/bb:v1"
    yield w
    w.registry.stop()


@pytest.fixture
def jd(daemon, bbworld):
    """A daemon with the busybox image already pulled."""
    daemon.alps("pull", "--quiet", bbworld.ref, check=True)
    daemon.ref = bbworld.ref
    return daemon


def edf(tmpdir, name, text):
    path = os.path.join(tmpdir, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def prepare(d, job, *args, check=True):
    return d.alps("prepare", "--job", job, "--user", str(NOBODY), *args, check=check)


def exec_(d, job, *cmd, user=NOBODY, check=False, **kw):
    return d.alps("exec", "--job", job, "--", *cmd, user=user, check=check, **kw)


def test_prepare_exec_release(jd, tmpdir_short):
    r = prepare(jd, "101", "--image", jd.ref)
    assert "job 101 prepared" in r.stdout and "/ overlay" in r.stdout
    r = exec_(jd, "101", "cat", "/etc/os-release")
    assert r.returncode == 0 and 'NAME="alps busybox"' in r.stdout
    r = exec_(jd, "101", "id", "-u")
    assert r.stdout.strip() == str(NOBODY)
    r = exec_(jd, "101", "sh", "-c", "exit 42")
    assert r.returncode == 42
    r = exec_(jd, "101", "pwd")
    assert r.stdout.strip() == "/home"       # the image's WorkingDir
    jobs = json.loads(jd.alps("--json", "jobs", check=True).stdout)["jobs"]
    assert [j["job"] for j in jobs] == ["101"] and jobs[0]["uid"] == NOBODY
    assert any(m["target"] == "/" and m["fstype"] == "overlay" for m in jobs[0]["mounts"])
    jd.alps("release", "--job", "101", check=True)
    assert json.loads(jd.alps("--json", "jobs").stdout)["jobs"] == []
    r = jd.alps("--json", "release", "--job", "101", check=True)       # idempotent
    assert json.loads(r.stdout)["was_prepared"] is False
    assert mounts_under(jd.run_dir + "/jobs") == []
    assert not [m for m in mounts_under(jd.run_dir + "/layers") if m != jd.run_dir + "/layers"]


def test_process_outside_daemon_joins_job(jd):
    prepare(jd, "102", "--image", jd.ref)
    pin = os.path.join(jd.run_dir, "jobs", "102", "mnt")
    r = subprocess.run(["nsenter", f"--mount={pin}", "cat", "/etc/os-release"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "alps busybox" in r.stdout
    jd.alps("release", "--job", "102", check=True)


def test_edf_semantics(jd, tmpdir_short):
    base = edf(tmpdir_short, "base.toml", f'image = "{jd.ref}"\n[env]\nFROM_BASE = "b"\n'
                                          'BOTH = "base"\n')
    e = edf(tmpdir_short, "job.toml",
            'base_environment = "base"\nworkdir = "/opt/work"\nwritable = false\n'
            '[env]\nBOTH = "edf"\nIMGVAR = ""\nHOMEVAR = "${HOME:-none}"\n')
    r = jd.alps("prepare", "--job", "103", "--user", str(NOBODY), "--environment", e,
                env={"EDF_PATH": tmpdir_short})
    assert r.returncode == 0, r.stderr
    r = exec_(jd, "103", "sh", "-c", 'echo "$FROM_BASE $BOTH [$IMGVAR]"; pwd')
    assert r.stdout.splitlines() == ["b edf []", "/opt/work"], r.stdout + r.stderr
    r = exec_(jd, "103", "touch", "/newfile")
    assert r.returncode != 0 and "Read-only" in r.stderr
    # Same environment again: already prepared; another one: a conflict.
    r = jd.alps("--json", "prepare", "--job", "103", "--user", str(NOBODY), "--environment", e,
                env={"EDF_PATH": tmpdir_short}, check=True)
    assert json.loads(r.stdout)["already_prepared"] is True
    r = prepare(jd, "103", "--image", jd.ref, check=False)
    assert r.returncode == 1 and "another environment" in r.stderr
    jd.alps("release", "--job", "103", check=True)


def test_writable_by_default(jd):
    prepare(jd, "104", "--image", jd.ref)
    r = exec_(jd, "104", "sh", "-c", "echo hi > /opt/work/new && cat /opt/work/new")
    assert r.returncode == 0 and r.stdout.strip() == "hi"
    jd.alps("release", "--job", "104", check=True)


def test_setuid_binary_gains_nothing(jd):
    prepare(jd, "105", "--image", jd.ref)
    r = exec_(jd, "105", "stat", "-c", "%a %u", "/opt/suid/busybox")
    assert r.stdout.strip() == "4755 0"         # the bit is there, owned by root...
    r = exec_(jd, "105", "/opt/suid/busybox", "id", "-u")
    assert r.returncode == 0 and r.stdout.strip() == str(NOBODY), r.stdout + r.stderr
    jd.alps("release", "--job", "105", check=True)


def test_unreadable_mount_source_refused(jd, tmpdir_short):
    secret = os.path.join(tmpdir_short, "secret")
    os.makedirs(secret)
    os.chmod(secret, 0o700)
    e = edf(tmpdir_short, "m.toml", f'image = "{jd.ref}"\nmounts = ["{secret}:/mnt/secret"]\n')
    r = prepare(jd, "106", "--environment", e, check=False)
    assert r.returncode == 1
    assert secret in r.stderr and ("denied" in r.stderr.lower() or "permission" in r.stderr.lower())
    assert json.loads(jd.alps("--json", "jobs").stdout)["jobs"] == []
    assert mounts_under(jd.run_dir + "/jobs") == []


def test_readable_mount_source_bound(jd, tmpdir_short):
    shared = os.path.join(tmpdir_short, "shared")
    os.makedirs(shared)
    os.chmod(shared, 0o755)
    with open(os.path.join(shared, "data"), "w") as f:
        f.write("hello data\n")
    os.chmod(os.path.join(shared, "data"), 0o644)
    e = edf(tmpdir_short, "m.toml", f'image = "{jd.ref}"\nmounts = ["{shared}:/data:ro"]\n')
    prepare(jd, "107", "--environment", e)
    r = exec_(jd, "107", "cat", "/data/data")
    assert r.stdout == "hello data\n"
    r = exec_(jd, "107", "touch", "/data/x")
    assert r.returncode != 0
    jd.alps("release", "--job", "107", check=True)


def test_exec_into_another_users_job_refused(jd):
    prepare(jd, "108", "--image", jd.ref)
    r = exec_(jd, "108", "true", user=1)       # uid 1 (daemon) is not the job's user
    assert r.returncode != 0 and "may not enter" in r.stderr
    jd.alps("release", "--job", "108", check=True)


def test_prepare_and_release_are_for_admins(jd):
    r = jd.alps("prepare", "--job", "109", "--user", str(NOBODY), "--image", jd.ref, user=NOBODY)
    assert r.returncode == 1 and "administrators" in r.stderr
    prepare(jd, "109", "--image", jd.ref)
    r = jd.alps("release", "--job", "109", user=NOBODY)
    assert r.returncode == 1 and "administrators" in r.stderr
    jd.alps("release", "--job", "109", check=True)


@pytest.mark.parametrize("text,want", [
    ('image = 3\n', "image"),
    ('imagee = "x"\n', "imagee"),
    ('mounts = ["/a:/b:rwx"]\n', "rwx"),
    ('base_environment = "nope-missing"\n', "nope-missing"),
])
def test_edf_errors_name_file_and_key(jd, tmpdir_short, text, want):
    e = edf(tmpdir_short, "bad.toml", text)
    r = prepare(jd, "110", "--environment", e, check=False)
    assert r.returncode == 1 and want in r.stderr and "bad.toml" in r.stderr, r.stderr
    r = jd.alps("edf", "check", e)
    assert r.returncode == 1 and want in r.stderr


def test_edf_check_json(jd, tmpdir_short):
    e = edf(tmpdir_short, "ok.toml", f'image = "{jd.ref}"\n[annotations]\ncom.x.y = "1"\n')
    r = jd.alps("--json", "edf", "check", e, check=True)
    j = json.loads(r.stdout)
    assert j["ok"] is True and j["warnings"]


def test_alps_run_as_user(jd):
    r = jd.alps("run", jd.ref, "--", "sh", "-c", "id -u; cat /etc/os-release", user=NOBODY)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == str(NOBODY) and "alps busybox" in r.stdout
    assert json.loads(jd.alps("--json", "jobs").stdout)["jobs"] == []


def test_user_run_disabled(daemon_factory, bbworld):
    d = daemon_factory("[jobs]\nallow_user_run = false\n")
    r = d.alps("run", bbworld.ref, "--", "true", user=NOBODY)
    assert r.returncode == 125 and "disabled" in r.stderr     # never started


def test_signal_reaches_process(jd):
    prepare(jd, "111", "--image", jd.ref)
    p = subprocess.Popen([binary("alps"), "--socket", jd.socket, "exec", "--job", "111", "--",
                          "sleep", "30"], user=NOBODY)
    time.sleep(1.0)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    rc = p.wait(20)
    assert time.monotonic() - t0 < 10
    assert rc == 128 + signal.SIGINT
    jd.alps("release", "--job", "111", check=True)


def test_release_kills_what_is_left(jd):
    prepare(jd, "112", "--image", jd.ref)
    p = subprocess.Popen([binary("alps"), "--socket", jd.socket, "exec", "--job", "112", "--",
                          "sleep", "300"], user=NOBODY)
    time.sleep(1.0)
    jd.alps("release", "--job", "112", check=True)
    assert p.wait(20) == 128 + signal.SIGTERM      # SIGKILL only after jobs.release_grace


def test_kill9_between_prepare_and_exec(jd):
    prepare(jd, "113", "--image", jd.ref)
    os.kill(jd.pid, signal.SIGKILL)
    jd.proc.wait()
    jd.log.close()
    jd.proc = None
    jd.start()
    r = exec_(jd, "113", "cat", "/etc/os-release")
    assert r.returncode == 0 and "alps busybox" in r.stdout
    jd.alps("release", "--job", "113", check=True)
    assert mounts_under(jd.run_dir + "/jobs") == []


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_cycles_leave_nothing_behind(daemon_factory, bbworld):
    # A small ASan quarantine, so that freed memory comes back and growth
    # would be ours (harmless without ASan).
    asan = os.environ.get("ASAN_OPTIONS", "")
    jd = daemon_factory(env={"ASAN_OPTIONS": f"{asan}:quarantine_size_mb=4"})
    jd.ref = bbworld.ref
    jd.alps("pull", "--quiet", jd.ref, check=True)
    def snapshot():
        # Only this daemon's: other tests may mount things meanwhile.
        n = len(mounts_under(jd.dir))
        loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
        mine = [l for l in loops.splitlines() if jd.dir in l]
        return n, len(mine), fd_count(jd.pid)

    prepare(jd, "warm", "--image", jd.ref)     # first use mounts the shared layers
    jd.alps("release", "--job", "warm", check=True)
    before = snapshot()
    for i in range(200):
        if i == 50:
            rss0 = rss_kb(jd.pid)       # after warming up allocator caches
        prepare(jd, f"c{i}", "--image", jd.ref)
        r = exec_(jd, f"c{i}", "true")
        assert r.returncode == 0, r.stderr
        jd.alps("release", "--job", f"c{i}", check=True)
    after = snapshot()
    assert after == before, (before, after)
    # Memory: no growth with cycles over the last 150 (a little slack for
    # allocator caches and the store's page cache).
    assert rss_kb(jd.pid) - rss0 < 16 * 1024, (rss0, rss_kb(jd.pid))


def test_concurrent_prepares(jd):
    procs = [subprocess.Popen([binary("alps"), "--socket", jd.socket, "prepare", "--job",
                               f"p{i}", "--user", str(NOBODY), "--image", jd.ref],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(20)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    for i in range(20):
        assert exec_(jd, f"p{i}", "true").returncode == 0
        jd.alps("release", "--job", f"p{i}", check=True)
    assert mounts_under(jd.run_dir + "/jobs") == []


def test_same_job_prepared_at_once(jd):
    """Two prologs of one job on one alpsd (several slurmd on a host) both
    find no job and race to record it: the loser is told the job is busy
    (the prolog asks again and gets "already prepared"), never "a job with
    this id exists"."""
    for _ in range(3):
        procs = [subprocess.Popen([binary("alps"), "--socket", jd.socket, "prepare", "--job",
                                   "twin", "--user", str(NOBODY), "--image", jd.ref],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(6)]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
        assert any(rc == 0 for rc, _ in results), results
        for rc, err in results:
            assert rc == 0 or "being prepared" in err, results
        jd.alps("release", "--job", "twin", check=True)


def fabric_conf(me, port, peer, peer_port):
    return (f'[fabric]\nenabled = true\nnode = "{me}"\naddress = "{me}"\nport = {port}\n'
            f'peers = ["{peer}:{peer_port}"]\nliveness_interval_ms = 200\n'
            f'peer_down_after_ms = 2000\n')


def wait_peer_up(d, peer, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = json.loads(d.alps("--json", "endpoints", check=True).stdout)
        if any(p["name"] == peer and p["state"] == "up" for p in j.get("peers", [])):
            return
        time.sleep(0.2)
    raise AssertionError(f"peer {peer} never came up: {j}")


def test_fabric_map_and_pinned_image(daemon_factory, bbworld, tmp_path):
    pa, pb = rf.free_port(), rf.free_port()
    a = daemon_factory(fabric_conf("127.0.0.2", pa, "127.0.0.3", pb), subdir="a")
    b = daemon_factory(fabric_conf("127.0.0.3", pb, "127.0.0.2", pa), subdir="b")
    wait_peer_up(a, "127.0.0.3")
    # A registry of our own whose tag we move under the job's feet.
    reg = rf.Registry(tmp_path, name="pinreg").start()
    try:
        layout = rf.build_image(tmp_path, "one", [{"v": b"one\n"}])
        images.umoci_modify(layout, "one", tmp_path, images.busybox_root, "pin1")
        rf.push(layout, "one", reg.host, "test/moving", "latest")
        ref = f"{reg.host}/test/moving:latest"
        nodes = "127.0.0.2,127.0.0.3,ghost"
        r = a.alps("--json", "prepare", "--job", "700", "--user", str(NOBODY), "--image", ref,
                   "--nodes", nodes, check=True)
        first = json.loads(r.stdout)
        assert first["down_peers"] == ["ghost"]
        r = exec_(a, "700", "sh", "-c", "cat $ALPS_FABRIC_MAP")
        m = json.loads(r.stdout)
        assert [n["name"] for n in m["nodes"]] == ["127.0.0.2", "127.0.0.3", "ghost"]
        assert m["nodes"][1]["state"] == "up"
        assert m["nodes"][1]["addresses"][0]["address"].endswith(f"127.0.0.3:{pb}")
        # The tag moves; node b, preparing the same job, runs what a pinned.
        rf.build_image(tmp_path, "two", [{"v": b"two\n"}], layout=layout)
        rf.push(layout, "two", reg.host, "test/moving", "latest")
        time.sleep(0.5)
        r = b.alps("--json", "prepare", "--job", "700", "--user", str(NOBODY), "--image", ref,
                   "--nodes", nodes, check=True)
        assert json.loads(r.stdout)["image_digest"] == first["image_digest"]
        a.alps("release", "--job", "700", check=True)
        b.alps("release", "--job", "700", check=True)
    finally:
        reg.stop()


def test_stop_with_a_running_exec(daemon_factory, bbworld):
    d = daemon_factory("[daemon]\nshutdown_grace = 1\n")
    d.alps("pull", "--quiet", bbworld.ref, check=True)
    prepare(d, "120", "--image", bbworld.ref)
    p = subprocess.Popen([binary("alps"), "--socket", d.socket, "exec", "--job", "120", "--",
                          "sleep", "60"], user=NOBODY, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert d.stop() == 0            # in-flight exec cut after the grace, nothing leaked
    d.check_log_clean()
    # The client learns the daemon went away, says so, and goes on waiting
    # for the command, which belongs to its job and goes on too.
    time.sleep(1)
    assert p.poll() is None
    d.start()                       # the job survived; release ends its process
    d.alps("release", "--job", "120", check=True)
    assert p.wait(20) == 125
    assert "lost alpsd while pid" in p.stderr.read()
    assert mounts_under(d.run_dir + "/jobs") == []


def test_exec_outlives_the_daemon_and_says_so(jd):
    """A daemon that goes away while a command runs does not orphan it
    silently: the client waits for the command to end, then says that its
    status is unknown (exit 125)."""
    prepare(jd, "190", "--image", jd.ref)
    p = subprocess.Popen([binary("alps"), "--socket", jd.socket, "exec", "--job", "190", "--",
                          "sh", "-c", "sleep 2; echo done"], user=NOBODY, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1)
    t0 = time.monotonic()
    jd.stop(signal.SIGKILL)
    out, err = p.communicate(timeout=30)
    assert out.strip() == "done", (out, err)
    assert time.monotonic() - t0 > 0.5          # it waited for the command
    assert p.returncode == 125 and "lost alpsd while pid" in err, err
    assert "exit status is unknown" in err
    jd.start()
    jd.alps("release", "--job", "190", check=True)


def test_exec_on_a_terminal_gets_one(jd):
    """On a terminal, exec gives the command a pseudo-terminal as its
    controlling terminal (a session of its own): tty_nr is set, input
    typed on the caller's terminal reaches it, ^C reaches it as SIGINT."""
    import pty
    import select
    prepare(jd, "191", "--image", jd.ref)
    master, slave = pty.openpty()
    p = subprocess.Popen([binary("alps"), "--socket", jd.socket, "exec", "--job", "191", "--",
                          "sh", "-c", "test -t 0 && echo TTY; cut -d' ' -f7 /proc/self/stat; "
                          "read x; echo got:$x; trap 'echo INT; exit 3' INT; "
                          "echo waiting; while :; do sleep 0.1; done"],
                         stdin=slave, stdout=slave, stderr=slave, user=NOBODY,
                         start_new_session=True)
    os.close(slave)
    out = b""

    def read_until(token, timeout=20):
        nonlocal out
        deadline = time.monotonic() + timeout
        while token not in out and time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    out += os.read(master, 4096)
                except OSError:
                    break
        return token in out

    try:
        assert read_until(b"TTY"), out
        os.write(master, b"hello\n")
        assert read_until(b"got:hello"), out
        assert read_until(b"waiting"), out
        os.write(master, b"\x03")             # ^C, typed
        assert read_until(b"INT"), out
        assert p.wait(20) == 3, out
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
    lines = out.decode(errors="replace").replace("\r", "").splitlines()
    tty_nr = lines[lines.index("TTY") + 1].strip()
    assert tty_nr != "0", out
    jd.alps("release", "--job", "191", check=True)
