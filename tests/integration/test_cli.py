"""The command line as people use it: usage errors and help, the pull
progress on a real pseudo-terminal, alps run's podman-like options, the
enroot REGISTRY#IMAGE form, bash completion.  A real alpsd and registry."""
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import termios

import pytest

import registry_fixture as rf
from conftest import binary

NOBODY = 65534


def alps(*args, **kw):
    return subprocess.run([binary("alps"), *args], capture_output=True, text=True, **kw)


# ---- usage and help (no daemon needed) ----------------------------------------

def test_usage_error_is_short_and_named():
    r = alps("images", "a*", "extra")
    assert r.returncode == 2
    assert r.stderr == ("alps images: unexpected argument 'extra'\nUsage: alps images "
                        "[-q|--quiet] [--format TEMPLATE] [PATTERN | --filter reference=PATTERN]\n"
                        "See 'alps images --help'.\n"), r.stderr
    r = alps("place", "--tasks", "x")
    assert r.returncode == 2 and r.stderr.startswith("alps place: --tasks must be a number")
    assert "Usage: alps place --tasks N" in r.stderr and "Plan GPUs" not in r.stderr
    r = alps("pull", "--bogus", "x")
    assert r.returncode == 2 and r.stderr.startswith("alps pull: unknown option '--bogus'\n")


def test_help_command():
    r = alps("help")
    assert r.returncode == 0 and "Commands:" in r.stdout and "help" in r.stdout
    r = alps("help", "run")
    assert r.returncode == 0 and r.stdout.startswith("Usage: alps run ")
    assert r.stdout == alps("run", "--help").stdout
    assert alps("pull", "-h").stdout.startswith("Usage: alps pull ")
    r = alps("help", "nope")
    assert r.returncode == 2 and "unknown command 'nope'" in r.stderr


def test_cache_commands_usage_like_the_others():
    # gc, pin, df, verify, squash used to print a bare line (gc --bogus: nothing).
    for argv, msg in ((["gc", "--bogus"], "unknown option '--bogus'"),
                      (["gc", "--max-size", "x"], "--max-size wants a size"),
                      (["pin"], "give one or more images"), (["df", "extra"], "unexpected"),
                      (["verify", "a", "b"], "give at most one image"),
                      (["squash", "onlyone"], "give a directory"),
                      (["unsquash"], "give a squashfs file")):
        r = alps(*argv)
        assert r.returncode == 2, (argv, r.stderr)
        assert r.stderr.startswith(f"alps {argv[0]}: {msg}") and \
            f"See 'alps {argv[0]} --help'." in r.stderr and "Usage: alps " in r.stderr, r.stderr
        r = alps("--json", *argv)
        assert r.returncode == 2 and json.loads(r.stdout)["code"] == "usage_error", r.stdout
    r = alps("df", "--socket", "/nonexistent.sock", "--json")     # globals after the command
    assert r.returncode == 3 and json.loads(r.stdout)["code"] == "unavailable"
    assert alps("gc", "--help").stdout.startswith("Usage: alps gc ")
    r = alps("help", "help")
    assert r.returncode == 0 and "Commands:" in r.stdout


def test_alpsd_command_line_errors():
    r = subprocess.run([binary("alpsd"), "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "--bogus" in r.stderr and "See 'alpsd --help'." in r.stderr
    assert "Usage" not in r.stderr, r.stderr       # one line, not the whole help
    r = subprocess.run([binary("alpsd"), "--set", "=1", "--print-config"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "--set wants KEY=VALUE" in r.stderr
    # A value meant as TOML but broken is an error, not a path '["/a:/b"'.
    r = subprocess.run([binary("alpsd"), "--set", 'jobs.default_mounts=["/a:/b"',
                        "--print-config"], capture_output=True, text=True)
    assert r.returncode == 1 and "jobs.default_mounts: not a TOML value" in r.stderr, r.stderr
    r = subprocess.run([binary("alpsd"), "--set", 'jobs.default_mounts=["/a:/b"]',
                        "--print-config"], capture_output=True, text=True)
    assert r.returncode == 0 and 'default_mounts = ["/a:/b"]' in r.stdout


def test_exec_options_end_at_the_command():
    # --help after the command is the command's, not alps's.
    r = alps("--socket", "/nonexistent.sock", "exec", "--job", "1", "sh", "--help")
    assert r.returncode == 125 and "Usage" not in r.stdout


def test_global_options_after_the_command():
    r = alps("status", "--socket", "/nonexistent.sock", "--json")
    assert r.returncode == 3 and r.stdout.lstrip().startswith("{")


# ---- a world with an image ------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rf.require_tools("docker-registry", "umoci", "skopeo", "busybox")
    if os.geteuid() != 0:
        pytest.skip("needs root (job containers)")
    import images
    w = type("World", (), {})()
    w.dir = tmp_path_factory.mktemp("cliworld")
    os.chmod(w.dir, 0o755)
    w.registry = rf.Registry(w.dir).start()
    layers = [{"etc/base": b"base\n"}] + [{f"data/l{i}": os.urandom(3 << 20)} for i in range(3)]
    layout = rf.build_image(w.dir, "bb", layers,
                            config={"config.cmd": ["cat", "/etc/base"],
                                    "config.env": ["PATH=/bin:/usr/bin"]})
    images.umoci_modify(layout, "bb", w.dir, images.busybox_root, "bb")
    rf.push(layout, "bb", w.registry.host, "test/bb", "v1")
    w.ref = f"{w.registry.host}/test/bb:v1"
    w.enroot = f"{w.registry.host}#test/bb:v1"
    yield w
    w.registry.stop()


def in_pty(argv, cols, term):
    """Run argv on a pseudo-terminal cols wide; (exit code, bytes written)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    env = dict(os.environ, TERM=term)
    p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return p.wait(), out.decode()


def check_redraw(out, cols):
    moves = list(re.finditer(r"\x1b\[(\d+)A", out))
    assert moves, out
    start = 0
    for m in moves:
        drawn = out[start:m.start()].count("\n")
        assert int(m.group(1)) == drawn, (m.group(0), drawn, out[start:m.start()])
        start = m.end()
    assert out.rstrip().count("\x1b[J") == 1             # the block erased at the end
    for line in re.sub(r"\x1b\[(2K|\d+A|J)", "", out).replace("\r", "").split("\n"):
        assert len(line) < cols or line.startswith("sha256:") or "digest" in line, line
    assert "0 B/s" not in out and "ETA 0 s" not in out
    tail = out[out.rindex("\x1b[J") + 3:]
    assert "\x1b" not in tail and "layers (" in tail, tail


@pytest.mark.parametrize("cols", [40, 120])
def test_pull_progress_on_a_terminal(daemon, world, cols):
    rc, out = in_pty([binary("alps"), "--socket", daemon.socket, "pull", world.ref], cols,
                     "xterm")
    assert rc == 0, out
    check_redraw(out, cols)
    assert "compressed" in out.split("\x1b[J")[-1]          # the summary says what it counts
    daemon.alps("rm", world.ref, check=True)


def test_pull_progress_dumb_terminal(daemon, world):
    rc, out = in_pty([binary("alps"), "--socket", daemon.socket, "pull", world.ref], 80, "dumb")
    assert rc == 0 and "\x1b" not in out, out
    assert "layer " in out


# ---- alps run -------------------------------------------------------------------

@pytest.fixture
def rd(daemon, world):
    daemon.alps("pull", "--quiet", world.ref, check=True)
    return daemon


def test_run_without_command_runs_the_image_cmd(rd, world):
    r = rd.alps("run", world.ref, user=NOBODY)
    assert r.returncode == 0 and r.stdout == "base\n", (r.returncode, r.stdout, r.stderr)


def test_run_env_mount_workdir(rd, world, tmpdir_short):
    src = os.path.join(tmpdir_short, "data")
    os.makedirs(src)
    with open(os.path.join(src, "f"), "w") as f:
        f.write("from the host\n")
    os.chmod(src, 0o755)
    os.chmod(os.path.join(src, "f"), 0o644)
    r = rd.alps("run", "-e", "GREETING=hi $there", "--env", "N=1", "-v", f"{src}:/mnt/data:ro",
                "-w", "/etc", world.ref, "--", "sh", "-c",
                'echo "$GREETING/$N"; pwd; cat /mnt/data/f', user=NOBODY)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi $there/1\n/etc\nfrom the host\n", r.stdout
    r = rd.alps("run", "-e", "1BAD=x", world.ref, "true")
    assert r.returncode == 2 and "alps run: --env '1BAD=x'" in r.stderr


def test_run_squashfs_file(rd, tmpdir_short):
    import images
    root = os.path.join(tmpdir_short, "root")
    images.busybox_root(root)
    with open(os.path.join(root, "etc", "which"), "w") as f:
        f.write("a squashfs file\n")
    sq = os.path.join(tmpdir_short, "img.sqsh")
    subprocess.run(["mksquashfs", root, sq, "-quiet", "-noappend", "-all-root"], check=True,
                   capture_output=True)
    os.chmod(sq, 0o644)
    os.chmod(tmpdir_short, 0o755)
    r = rd.alps("run", sq, "--", "cat", "/etc/which", user=NOBODY)
    assert r.returncode == 0 and r.stdout == "a squashfs file\n", (r.stdout, r.stderr)


def test_enroot_form(daemon, world):
    daemon.alps("pull", "--quiet", world.enroot, check=True)
    text = daemon.alps("inspect", world.enroot, check=True).stdout
    assert text.startswith("sha256:") and not text.rstrip().endswith("}")   # text, no JSON
    r = daemon.alps("run", world.enroot, "--", "cat", "/etc/base", user=NOBODY)
    assert r.returncode == 0 and r.stdout == "base\n", r.stderr
    daemon.alps("rm", world.enroot, check=True)
    r = daemon.alps("inspect", world.enroot)
    assert r.returncode == 1


# ---- bash completion ------------------------------------------------------------

def complete(words):
    """Completions bash offers for the command line words (the last one
    being completed), from the installed completion script."""
    src = os.environ.get("ALPS_SRCDIR", os.path.join(os.path.dirname(__file__), "..", ".."))
    script = os.path.join(src, "client", "completion", "alps")
    line = " ".join(words)
    prog = (f"source {script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\n"
            f"COMP_CWORD={len(words) - 1}\nCOMP_LINE={line!r}\nCOMP_POINT={len(line)}\n"
            "_alps alps\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    r = subprocess.run(["bash", "--norc", "-c", prog], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bash_completion():
    assert set(complete(["alps", "im"])) == {"images", "import"}
    assert "--tag" in complete(["alps", "import", "--t"])
    assert set(complete(["alps", "pr"])) == {"prepare", "prolog"}
    assert "--tasks" in complete(["alps", "place", "--t"])
    assert "--workdir" in complete(["alps", "run", "--w"])
    assert complete(["alps", "help", "rel"]) == ["release"]
    assert "--json" in complete(["alps", "images", "--j"])
    assert "--recompress" in complete(["alps", "export", "--r"])
    assert complete(["alps", "export", "--compressor", "gz"]) == ["gzip"]
    assert set(complete(["alps", "images", "--f"])) == {"--filter", "--format"}
    assert complete(["alps", "images", "--filter", "r"]) == ["reference="]
    # Every command alps knows completes.
    listed = re.findall(r"^  (\S+) ", alps("help").stdout.split("Commands:\n")[1], re.M)
    assert listed and set(listed) <= set(complete(["alps", ""])), listed


# ---- messages in the user's words ------------------------------------------------

INTERNALS = re.compile(r"store /|sqlite|prctl|openat2|stat\(|open\(|mkdir\(|faccessat|setgroups|"
                       r"\(open\)|alps-enter|nshelper|looking up|untagging|run-\d+-\d+")


def test_daemon_messages_name_the_users_object(rd, world):
    cases = [  # (argv, user, what the message must name)
        (["exec", "--job", "999", "true"], NOBODY, "no such job 999"),
        (["inspect", "nosuch"], NOBODY, "no such image docker.io/library/nosuch:latest"),
        (["inspect", "sha256:abcd"], NOBODY, "no such image sha256:abcd"),
        (["rm", "nosuch"], None, "no such tag docker.io/library/nosuch:latest"),
        (["pin", "nosuch"], None, "no such image docker.io/library/nosuch:latest"),
        (["run", "-v", "/nonexistent/src:/mnt", world.ref, "true"], NOBODY,
         "cannot open /nonexistent/src as uid 65534: No such file or directory"),
        (["run", "-v", "/root:/mnt", world.ref, "true"], NOBODY,
         "cannot open /root as uid 65534: Permission denied"),
        (["run", "-w", "/etc/base", world.ref, "true"], NOBODY,
         "cannot enter the workdir /etc/base: Not a directory"),
        (["run", world.ref, "/nonexistent"], NOBODY, "alps run: /nonexistent: command not found"),
        (["run", "-v", "/tmp:/etc/base/sub", world.ref, "true"], NOBODY, "/etc/base"),
        (["run", "-w", "/etc/base/sub", world.ref, "true"], NOBODY, "/etc/base"),
    ]
    for argv, user, want in cases:
        r = rd.alps(*argv, user=user)
        assert r.returncode != 0 and want in r.stderr, (argv, r.stderr)
        assert not INTERNALS.search(r.stderr) and rd.state_dir not in r.stderr, (argv, r.stderr)


# ---- alps run binds the caller's home and working directory ---------------------

def test_run_binds_home_and_cwd(rd, world, users, tmpdir_short):
    v, a = users.victim, users.attacker
    with open(os.path.join(v.home, "in-home"), "w") as f:
        f.write("home file\n")
    os.chown(os.path.join(v.home, "in-home"), v.uid, v.gid)
    work = os.path.join(tmpdir_short, "work")
    os.makedirs(work)
    with open(os.path.join(work, "in-cwd"), "w") as f:
        f.write("cwd file\n")
    os.chown(work, v.uid, v.gid)
    os.chown(os.path.join(work, "in-cwd"), v.uid, v.gid)

    def run(user, *args, cwd, **kw):
        return user.run([binary("alps"), "--socket", rd.socket, "run", *args], cwd=cwd, **kw)
    script = f"cat {v.home}/in-home {work}/in-cwd; pwd"
    r = run(v, world.ref, "sh", "-c", script, cwd=work)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"home file\ncwd file\n{work}\n", r.stdout
    # A cwd under the home starts there, through the home's bind.
    r = run(v, world.ref, "pwd", cwd=v.home)
    assert r.returncode == 0 and r.stdout == f"{v.home}\n", (r.stdout, r.stderr)
    r = run(v, "--no-home", world.ref, "sh", "-c", script, cwd=work)
    assert "home file" not in r.stdout and "cwd file" in r.stdout, r.stdout
    r = run(v, "--contain", world.ref, "sh", "-c", f"ls {work}; pwd", cwd=work)
    assert "in-cwd" not in r.stdout and r.stdout == "/\n", r.stdout
    # A -v on the home's path replaces the default bind (not "two mounts on one
    # destination").
    r = run(v, "-v", f"{work}:{v.home}", world.ref, "ls", v.home, cwd=work)
    assert r.returncode == 0 and r.stdout == "in-cwd\n", (r.stdout, r.stderr)
    # A system directory as cwd is not bound over the image's.
    r = run(v, world.ref, "cat", "/etc/base", cwd="/etc")
    assert r.returncode == 0 and r.stdout == "base\n", (r.stdout, r.stderr)
    # The attack: HOME pointing at another user's home binds nothing of it.
    for home in (v.home, "/root"):
        r = run(a, world.ref, "sh", "-c", f"ls -a {home}; cat {v.home}/in-home", cwd=a.home,
                env={"HOME": home})
        assert "home file" not in r.stdout and "in-home" not in r.stdout, r.stdout
        assert r.returncode == 1 and "cannot open" not in r.stderr, r.stderr


# ---- alps images: one row per reference, filters, templates, totals ---------------

def test_images_listing(daemon, world):
    layout = rf.Layout(os.path.join(str(world.dir), "oci"))
    subprocess.run(["umoci", "config", "--image", f"{layout.path}:bb", "--tag", "bb2",
                    "--config.env=TWIN=1"], check=True, capture_output=True)
    rf.push(layout, "bb", world.registry.host, "test/bb", "v2")
    rf.push(layout, "bb2", world.registry.host, "test/bb2", "1")
    host = world.registry.host
    # Three spellings of v1, v2 of the same image, bb2 sharing every layer.
    for ref in (world.ref, "docker://" + world.ref, world.enroot, f"{host}/test/bb:v2",
                f"{host}/test/bb2:1"):
        daemon.alps("pull", "--quiet", ref, check=True)
    q = daemon.alps("images", "--quiet", check=True).stdout.split()
    assert sorted(q) == [f"{host}/test/bb2:1", world.ref, f"{host}/test/bb:v2"], q
    r = daemon.alps("images", check=True).stdout.splitlines()
    assert len(r) == 1 + 3 + 1 and r[0].startswith("REFERENCE"), r
    m = re.match(r"2 images, ([\d.]+ \w+) in layers, ([\d.]+ \w+) of it shared", r[-1])
    assert m and m.group(1) == m.group(2), r[-1]     # bb2 uses every layer of bb
    assert daemon.alps("images", "-q", f"{host}/test/bb:*").stdout.split() == \
        sorted([world.ref, f"{host}/test/bb:v2"])
    r = daemon.alps("images", "--filter", "reference=*bb2", "--format",
                    "{{.Repository}}:{{.Tag}}\\t{{ .Layers }}", check=True)
    assert r.stdout == f"{host}/test/bb2:1\t5\n", r.stdout
    assert daemon.alps("images", "-q", "nomatch*", check=True).stdout == ""
    js = json.loads(daemon.alps("images", "--json", "*bb2*", check=True).stdout)
    assert [i["references"] for i in js["images"]] == [[f"{host}/test/bb2:1"]]
    assert js["totals"]["image_count"] == 1 and js["totals"]["squashfs_shared"] == 0
    r = daemon.alps("images", "--format", "{{.Bogus}}")
    assert r.returncode == 2 and "{{.Bogus}}" in r.stderr and "Repository" in r.stderr
    r = daemon.alps("images", "--filter", "label=x")
    assert r.returncode == 2 and "reference=PATTERN" in r.stderr


def test_exec_rank_beyond_the_jobs_tasks(rd, world):
    rd.alps("prepare", "--job", "rk1", "--user", str(NOBODY), "--image", world.ref,
            "--tasks", "2", check=True)
    try:
        r = rd.alps("exec", "--job", "rk1", "--rank", "1", "true", user=NOBODY)
        assert r.returncode == 0, r.stderr
        r = rd.alps("exec", "--job", "rk1", "--rank", "2", "true", user=NOBODY)
        assert r.returncode == 125, (r.returncode, r.stderr)
        assert "rank 2 is beyond job rk1's 2 tasks (ranks 0 to 1)" in r.stderr, r.stderr
    finally:
        rd.alps("release", "--job", "rk1", check=True)


def test_run_option_errors_name_the_option():
    """alps run's -v and -w travel as an EDF of their own: a mistake in one
    is reported against the option the user typed, not against that file's
    made-up name and line, before any daemon is asked."""
    cases = [
        (["-v", "/tmp:/x:bogus"], "--mount '/tmp:/x:bogus': unknown mount flag 'bogus'"),
        (["-w", "relative"], "--workdir 'relative': give an absolute path"),
    ]
    for args, want in cases:
        r = alps("--socket", "/nonexistent/s.sock", "run", *args, "busybox", "true")
        assert r.returncode == 2 and f"alps run: {want}" in r.stderr, r.stderr
        assert "container-options" not in r.stderr and "cannot reach" not in r.stderr, r.stderr
