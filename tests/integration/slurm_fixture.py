"""A real single-node Slurm on loopback for the SPANK plugin's tests:
munged, slurmctld and slurmd (Debian's packages) started in the foreground
by this module, with a private key, config, spool and state, and stopped by
the PIDs it started.  The node runs the plugin from the build tree and the
build tree's `alps prolog` / `alps epilog`."""
import contextlib
import os
import shutil
import socket
import subprocess
import time

import pytest

SLURM_TOOLS = ("munged", "slurmctld", "slurmd", "srun", "sbatch", "scontrol", "sinfo")


@contextlib.contextmanager
def running(w):
    """Start w.slurm (w.daemon and w.registry are running); afterwards stop
    them all, check the daemon's log, unmount and remove w.dir.  What a
    module's Slurm world fixture does around its yield."""
    from conftest import unmount_under
    try:
        w.slurm.start()
    except Exception:
        w.slurm.stop()
        w.daemon.stop()
        w.registry.stop()
        raise
    yield w
    w.slurm.stop()
    rc = w.daemon.stop()
    w.daemon.check_log_clean()
    w.registry.stop()
    unmount_under(w.dir)
    shutil.rmtree(w.dir, ignore_errors=True)
    assert rc == 0


def user_edf(user, name, text):
    """An EDF in the user's ~/.edf, owned by the user; its path."""
    d = os.path.join(user.home, ".edf")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    for p in (d, path):
        os.chown(p, user.uid, user.gid)
    return path


def require_slurm():
    missing = [t for t in SLURM_TOOLS if not shutil.which(t)]
    if missing:
        pytest.skip("Slurm not installed (missing " + ", ".join(missing) + ")")
    if os.geteuid() != 0:
        pytest.skip("a Slurm node needs root")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Slurm:
    NODE = "alpsn1"

    def __init__(self, dir, alps, plugin, alpsd_socket, plugstack_args="", nodes=1):
        self.dir = dir
        # nodes > 1: more slurmd on this host (slurmd -N NAME, a Port= each),
        # in partition "multi"; the default partition keeps the first alone.
        self.nodes = [self.NODE] + [f"alpsn{i}" for i in range(2, nodes + 1)]
        self.alps = alps
        self.plugin = plugin
        self.alpsd_socket = alpsd_socket
        self.plugstack_args = plugstack_args
        self.procs = []
        self.conf = os.path.join(dir, "slurm.conf")
        self.prolog_log = os.path.join(dir, "prolog.log")
        self.epilog_log = os.path.join(dir, "epilog.log")

    def env(self, **extra):
        e = dict(os.environ, SLURM_CONF=self.conf)
        e.update(extra)
        return e

    def _script(self, name, cmd, log):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            # What it says goes to slurmd (its log shows a failed prolog's
            # output) and to a file the tests read.
            f.write("#!/bin/bash\nset -o pipefail\n"
                    f"echo \"$(date +%T) job $SLURM_JOB_ID\" >> {log}\n"
                    f"{self.alps} --socket {self.alpsd_socket} {cmd} 2>&1 | tee -a {log}\n")
        os.chmod(path, 0o755)
        return path

    def write_config(self):
        d = self.dir
        for sub in ("state", "spool", "log", "munge", "munge-socket"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        # The key is root's alone; the socket is for every user.
        os.chmod(os.path.join(d, "munge"), 0o700)
        os.chmod(os.path.join(d, "munge-socket"), 0o755)
        with open(os.path.join(d, "munge", "munge.key"), "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(os.path.join(d, "munge", "munge.key"), 0o600)
        self.munge_socket = os.path.join(d, "munge-socket", "munge.sock")
        prolog = self._script("prolog.sh", "prolog --timeout 120", self.prolog_log)
        epilog = self._script("epilog.sh", "epilog", self.epilog_log)
        with open(os.path.join(d, "plugstack.conf"), "w") as f:
            f.write(f"required {self.plugin} socket={self.alpsd_socket} "
                    f"{self.plugstack_args}\n")
        host = socket.gethostname()
        cpus = os.cpu_count() or 2
        conf = f"""
ClusterName=alpstest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.%n.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmdDebug=debug
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
PlugStackConfig={d}/plugstack.conf
Prolog={prolog}
Epilog={epilog}
PrologFlags=Alloc
KillWait=5
InactiveLimit=0
"""
        for n in self.nodes:
            port = f" Port={free_port()}" if len(self.nodes) > 1 else ""
            conf += (f"NodeName={n} NodeAddr=127.0.0.1 NodeHostname={host}{port} CPUs={cpus} "
                     "State=UNKNOWN\n")
        conf += f"PartitionName=debug Nodes={self.NODE} Default=YES MaxTime=INFINITE State=UP\n"
        if len(self.nodes) > 1:
            conf += f"PartitionName=multi Nodes={','.join(self.nodes)} MaxTime=INFINITE State=UP\n"
        with open(self.conf, "w") as f:
            f.write(conf)

    def _start(self, argv, name):
        log = open(os.path.join(self.dir, "log", name + ".out"), "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env())
        self.procs.append((p, log))
        return p

    def start(self):
        self.write_config()
        d = self.dir
        self._start(["munged", "-F", "-f", f"--socket={self.munge_socket}",
                     f"--key-file={d}/munge/munge.key", f"--log-file={d}/munge/log",
                     f"--pid-file={d}/munge/pid", f"--seed-file={d}/munge/seed"], "munged")
        self._wait(lambda: os.path.exists(self.munge_socket), "munged")
        self._start(["slurmctld", "-D", "-i", "-f", self.conf], "slurmctld")
        for n in self.nodes:
            self._start(["slurmd", "-D", "-N", n, "-f", self.conf],
                        "slurmd" if n == self.NODE else "slurmd-" + n)
        self._wait(self._node_idle, "the Slurm node to be idle", 60)
        return self

    def _node_idle(self):
        r = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True,
                           env=self.env())
        # A node in two partitions is listed twice.
        states = dict(l.split() for l in r.stdout.splitlines() if len(l.split()) == 2)
        return r.returncode == 0 and sorted(states) == sorted(self.nodes) and all(
            s in ("idle", "mixed", "allocated") for s in states.values())

    def _wait(self, cond, what, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p, _ in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited with {p.returncode}:\n"
                                       + self.logs())
            if cond():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}:\n" + self.logs())

    def logs(self):
        out = []
        for name in ("slurmctld.log", "slurmd.log"):
            try:
                with open(os.path.join(self.dir, "log", name), errors="replace") as f:
                    out.append(f"--- {name}\n" + f.read()[-int(os.environ.get("ALPS_SLURM_LOG_TAIL", "3000")):])
            except OSError:
                pass
        return "\n".join(out)

    def resume(self):
        """Back to service after a test drained the node (a failed prolog)."""
        subprocess.run(["scontrol", "update", f"NodeName={self.NODE}", "State=RESUME"],
                       capture_output=True, env=self.env())
        self._wait(self._node_idle, "the node to be idle again", 30)

    def run(self, argv, user=None, timeout=120, **kw):
        """Run a Slurm client command (srun, sbatch...) as user (a LocalUser) or root."""
        env = self.env(**(kw.pop("env", None) or {}))
        if user is not None:
            env.update(user.env())
            kw.setdefault("cwd", user.home)
            return subprocess.run(argv, user=user.uid, group=user.gid, extra_groups=[],
                                  env=env, capture_output=True, text=True, timeout=timeout, **kw)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                              **kw)

    def stop(self):
        # Last started, first stopped: slurmd, slurmctld, munged.
        for p, log in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            log.close()
        self.procs = []
