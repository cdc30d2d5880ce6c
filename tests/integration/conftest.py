"""Fixtures: a real alpsd on a private socket and state directory."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

import alpsclient

SRCDIR = os.environ.get("ALPS_SRCDIR",
                        os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILDDIR = os.environ.get("ALPS_BUILDDIR", SRCDIR)


def binary(name):
    path = os.path.join(BUILDDIR, name)
    if not os.path.exists(path):
        pytest.skip(f"{name} not built in {BUILDDIR}")
    return path


@pytest.fixture(scope="session")
def pb():
    return alpsclient.load_proto(SRCDIR)


class Daemon:
    """One alpsd process with its own socket, store, run dir and config."""

    def __init__(self, tmpdir, config_text="", extra_args=(), env=None):
        self.dir = tmpdir
        self.socket = os.path.join(tmpdir, "alpsd.sock")
        self.state_dir = os.path.join(tmpdir, "state")
        self.run_dir = os.path.join(tmpdir, "run")
        self.config = os.path.join(tmpdir, "alpsd.conf")
        with open(self.config, "w") as f:
            f.write(config_text)
        self.log_path = os.path.join(tmpdir, "alpsd.log")
        self.extra_args = list(extra_args)
        self.env = env
        self.run_dir_on_cmdline = True
        self.proc = None

    def argv(self):
        run = ["--run-dir", self.run_dir] if self.run_dir_on_cmdline else []
        return [binary("alpsd"), "--foreground", "--config", self.config,
                "--socket", self.socket, "--state-dir", self.state_dir,
                "--log-level", "debug"] + run + self.extra_args

    def start(self, timeout=20):
        self.log = open(self.log_path, "ab")
        env = dict(os.environ, **(self.env or {}))
        # The namespace helper this build made, not an installed one.
        helper = os.path.join(BUILDDIR, "libexec", "alps-nshelper")
        if os.path.exists(helper):
            env.setdefault("ALPS_NSHELPER", helper)
        self.proc = subprocess.Popen(self.argv(), stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"alpsd exited with {self.proc.returncode}:\n{self.read_log()}")
            if os.path.exists(self.socket):
                try:
                    with alpsclient.Conn(self.socket, timeout=2) as c:
                        if c.status().status == 0:
                            return self
                except OSError:
                    pass
            time.sleep(0.02)
        raise RuntimeError("alpsd did not come up:\n" + self.read_log())

    @property
    def pid(self):
        return self.proc.pid

    def conn(self, timeout=10.0):
        return alpsclient.Conn(self.socket, timeout=timeout)

    def alps(self, *args, check=False, user=None, input=None, timeout=120, env=None):
        argv = [binary("alps"), "--socket", self.socket] + list(args)
        kw = {}
        if user is not None:
            kw["user"] = user
        e = dict(os.environ)
        if env:
            e.update(env)
        r = subprocess.run(argv, capture_output=True, text=True, input=input,
                           timeout=timeout, env=e, **kw)
        if check and r.returncode != 0:
            raise AssertionError(f"alps {' '.join(args)} failed ({r.returncode}):\n"
                                 f"{r.stdout}\n{r.stderr}")
        return r

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stop the daemon; returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def check_log_clean(self):
        """No sanitizer report, no leak report, in the daemon's output."""
        text = self.read_log()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                       "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer"):
            assert marker not in text, f"sanitizer report in alpsd log:\n{text[-6000:]}"


def unmount_under(path):
    """Detach every mount below path (deepest first): a test's jobs and
    layers must never be left mounted, nor deleted through a mount."""
    with open("/proc/self/mountinfo") as f:
        points = [l.split()[4] for l in f]
    prefix = path.rstrip("/") + "/"
    for mp in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)


def mounts_under(path):
    prefix = path.rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        return [l.split()[4] for l in f if l.split()[4].startswith(prefix)]


@pytest.fixture
def tmpdir_short():
    # Unix socket paths are limited to 107 bytes: keep temp dirs short.
    d = tempfile.mkdtemp(prefix="alps-", dir="/tmp")
    os.chmod(d, 0o755)      # tests run clients as other users too
    yield d
    unmount_under(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon_factory(pb, tmpdir_short):
    made = []

    def make(config_text="", extra_args=(), start=True, subdir=None, env=None):
        d = tmpdir_short if subdir is None else os.path.join(tmpdir_short, subdir)
        os.makedirs(d, exist_ok=True)
        dm = Daemon(d, config_text, extra_args, env)
        made.append(dm)
        if start:
            dm.start()
        return dm

    yield make
    for dm in made:
        if dm.alive():
            rc = dm.stop()
            assert rc == 0, f"alpsd exited with {rc} at teardown:\n{dm.read_log()[-4000:]}"
        dm.check_log_clean()


@pytest.fixture
def daemon(daemon_factory):
    return daemon_factory()


class LocalUser:
    """An unprivileged local user made for the test session: an attacker or
    a victim in the security tests.  uid/gid are its own (not nobody's), its
    home is 0700 and owned by it."""

    def __init__(self, name, uid, gid, home):
        self.name, self.uid, self.gid, self.home = name, uid, gid, home

    def env(self, **extra):
        e = {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}
        e.update(extra)
        return e

    def run(self, argv, **kw):
        """Run argv as this user (real and effective ids, its groups)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        env = dict(os.environ, **self.env())
        env.update(kw.pop("env", None) or {})
        return subprocess.run(argv, user=self.uid, group=self.gid, extra_groups=[],
                              env=env, cwd=kw.pop("cwd", self.home), **kw)


def _make_user(tag):
    # Names unique to this process, so test runs in parallel never share or
    # delete each other's users.
    name = f"alps{tag}{os.getpid() % 100000}"
    subprocess.run(["userdel", "-r", name], capture_output=True)
    subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/sh", name],
                   check=True, capture_output=True)
    import pwd
    pw = pwd.getpwnam(name)
    os.chmod(pw.pw_dir, 0o700)
    return LocalUser(name, pw.pw_uid, pw.pw_gid, pw.pw_dir)


@pytest.fixture(scope="session")
def users():
    """Two fresh unprivileged users: users.victim and users.attacker (root
    only; removed at the end of the session)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create test users")
    made = []

    class Users:
        pass
    u = Users()
    try:
        u.victim = _make_user("v")
        made.append(u.victim)
        u.attacker = _make_user("a")
        made.append(u.attacker)
        yield u
    finally:
        for t in made:
            subprocess.run(["userdel", "-r", "-f", t.name], capture_output=True)
