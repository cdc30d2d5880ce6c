"""Slurm tasks and the host (doc/hooks.md, doc/slurm.md): `srun --mpi=pmix`
in the container with the PMIx hook (Debian 12's Slurm has mpi/pmix_v4,
with libpmix-dev for the library it opens), per-rank GPU variables from the
placement plan of a DGX-2 topology, and a site EDF preset found by srun.
Real single-node Slurm (slurm_fixture.py), real alpsd, real registry; root
only."""
import os
import tempfile

import pytest

import images
import registry_fixture as rf
import slurm_fixture as sf
from conftest import SRCDIR, Daemon, binary

DGX2 = os.path.join(SRCDIR, "tests", "data", "topologies", "hwloc-nvidiaDGX2.xml")
PMIX_LIB = "/usr/lib/x86_64-linux-gnu/pmix2/lib/libpmix.so"


@pytest.fixture(scope="module")
def world(pb, users):
    sf.require_slurm()
    rf.require_tools("docker-registry", "umoci", "skopeo", "busybox")
    w = type("World", (), {})()
    w.dir = tempfile.mkdtemp(prefix="alps-pmix-", dir="/tmp")
    os.chmod(w.dir, 0o755)
    w.registry = rf.Registry(w.dir).start()
    layout = rf.build_image(w.dir, "bb", [{"etc/base": b"base\n"}],
                            config={"config.env": ["PATH=/bin:/usr/bin",
                                                   "PMIX_SERVER_TMPDIR=/stale/from/image"]})
    images.umoci_modify(layout, "bb", w.dir, lambda root: images.busybox_root(root), "bb")
    rf.push(layout, "bb", w.registry.host, "test/pm", "v1")
    w.ref = f"{w.registry.host}/test/pm:v1"
    s = os.path.join(w.dir, "s")
    os.makedirs(os.path.join(s, "spool"))
    os.makedirs(os.path.join(s, "pmixcli"), mode=0o1777)
    os.chmod(os.path.join(s, "pmixcli"), 0o1777)
    # The client side's directory where the hook binds it (mpi.conf is
    # read from slurm.conf's directory).
    with open(os.path.join(s, "mpi.conf"), "w") as f:
        f.write(f"PMIxCliTmpDirBase={s}/pmixcli\n")
    os.makedirs(os.path.join(w.dir, "d"))
    conf = (f'[topology]\nxml = "{DGX2}"\n'
            f'[hooks.pmix]\ndirectories = ["{s}/spool", "{s}/pmixcli"]\n')
    w.daemon = Daemon(os.path.join(w.dir, "d"), conf).start()
    w.daemon.alps("pull", "--quiet", w.ref, check=True)
    w.slurm = sf.Slurm(s, binary("alps"), binary("alps_spank.so"), w.daemon.socket)
    w.users = users
    with sf.running(w):
        yield w


user_edf = sf.user_edf


# PMIx 4's server listens on loopback TCP (PMIX_SERVER_URI*); what a client
# needs from the file system is the server's directory with its data store
# (PMIX_DSTORE_*_BASE_PATH) and, next to it in SlurmdSpoolDir, the step's
# own socket (stepd.slurm.pmix.JOB.STEP).
PROBE = ('echo "task=$SLURM_PROCID ns=$PMIX_NAMESPACE rank=$PMIX_RANK tmp=$PMIX_SERVER_TMPDIR '
         'ds=$PMIX_DSTORE_21_BASE_PATH cuda=$CUDA_VISIBLE_DEVICES nv=$NVIDIA_VISIBLE_DEVICES"; '
         'test -d "$PMIX_DSTORE_21_BASE_PATH" && echo "dstore=$SLURM_PROCID"; '
         'spool=$(dirname "$PMIX_SERVER_TMPDIR"); '
         'for s in $(find "$spool" -maxdepth 1 -type s 2>/dev/null); do echo "sock=$s"; done')


def tasks(out):
    """{task: {key: value}} of the probe's lines."""
    t = {}
    for line in out.splitlines():
        if line.startswith("task="):
            kv = dict(f.split("=", 1) for f in line.split())
            t[int(kv["task"])] = kv
    return t


def test_srun_mpi_pmix_in_container(world):
    r = world.slurm.run(["srun", "--mpi=list"])
    if "pmix" not in r.stdout + r.stderr or not os.path.exists(PMIX_LIB):
        pytest.skip("Slurm has no mpi/pmix here (libpmix-dev missing?)")
    v = world.users.victim
    user_edf(v, "pm.toml", f'image = "{world.ref}"\n[annotations]\n'
             '"com.hooks.pmix.enabled" = "true"\n[env]\nPMIX_RANK = "99"\n')
    r = world.slurm.run(["srun", "-n", "2", "--mpi=pmix", "--environment=pm", "sh", "-c",
                         PROBE], user=v)
    assert r.returncode == 0, r.stderr + world.slurm.logs()
    t = tasks(r.stdout)
    assert sorted(t) == [0, 1], r.stdout
    for rank, kv in t.items():
        # Slurm's step values, not the image's or the EDF's.
        assert kv["rank"] == str(rank), r.stdout
        assert kv["ns"].startswith("slurm.pmix."), r.stdout
        assert "/spool/" in kv["tmp"] and "pmix." in kv["tmp"], r.stdout
        # The server's data store and the step's socket are there, inside.
        assert f"dstore={rank}" in r.stdout.splitlines(), r.stdout
        assert kv["ds"].startswith(kv["tmp"]), r.stdout
        assert any(line.startswith("sock=") and "stepd.slurm.pmix." in line
                   for line in r.stdout.splitlines()), r.stdout
        # Per-rank GPUs of the DGX-2's placement (16 GPUs, 2 tasks).
        assert kv["cuda"] == kv["nv"] != "", r.stdout
    assert t[0]["cuda"] != t[1]["cuda"] and len(t[0]["cuda"].split(",")) == 8, r.stdout


def test_pmix_hook_off_hides_the_server(world):
    r = world.slurm.run(["srun", "--mpi=list"])
    if "pmix" not in r.stdout + r.stderr or not os.path.exists(PMIX_LIB):
        pytest.skip("Slurm has no mpi/pmix here")
    v = world.users.victim
    user_edf(v, "nopm.toml", f'image = "{world.ref}"\n')
    r = world.slurm.run(["srun", "-n", "1", "--mpi=pmix", "--environment=nopm", "sh", "-c",
                         PROBE], user=v)
    assert r.returncode == 0, r.stderr + world.slurm.logs()
    t = tasks(r.stdout)
    assert "sock=" not in r.stdout and "dstore=" not in r.stdout, r.stdout
    # Slurm sets the PMIx variables after the plugin's attach (in the
    # task, as the user), so they name the step's server even here; only
    # its files are out of reach.
    assert t[0]["ns"].startswith("slurm.pmix."), r.stdout


def test_site_preset_through_srun(world):
    """srun --environment=NAME finds the site's preset after ~/.edf, and a
    user's EDF builds on it with base_environment (doc/edf.md)."""
    v = world.users.victim
    site = os.path.join(world.dir, "site-edf")
    os.makedirs(site, mode=0o755, exist_ok=True)
    with open(os.path.join(site, "lumi-ai.toml"), "w") as f:
        f.write(f'image = "{world.ref}"\n[env]\nNCCL_SOCKET_IFNAME = "hsn0"\n')
    os.chmod(os.path.join(site, "lumi-ai.toml"), 0o644)
    user_edf(v, "mine.toml", 'base_environment = "lumi-ai"\n[env]\nMINE = "1"\n')
    env = {"ALPS_EDF_SITE_DIR": site}
    for name in ("lumi-ai", "mine"):
        r = world.slurm.run(["srun", "-n", "1", f"--environment={name}", "sh", "-c",
                             'echo "if=$NCCL_SOCKET_IFNAME mine=$MINE"; cat /etc/os-release'],
                            user=v, env=env)
        assert r.returncode == 0, r.stderr + world.slurm.logs()
        assert "if=hsn0" in r.stdout and "alps busybox" in r.stdout, r.stdout
    assert "mine=1" in r.stdout


def _exec_rank_env(d, ref, user, tasks, rank):
    edf = os.path.join(d.dir, "gpu.toml")
    with open(edf, "w") as f:
        f.write(f'image = "{ref}"\n')
    os.chmod(edf, 0o644)
    job = f"gpu{tasks}"
    d.alps("prepare", "--job", job, "--user", str(user.uid), "--environment", edf,
           "--tasks", str(tasks), check=True)
    try:
        r = d.alps("exec", "--job", job, "--rank", str(rank), "--", "sh", "-c",
                   'echo "cuda=$CUDA_VISIBLE_DEVICES nv=$NVIDIA_VISIBLE_DEVICES '
                   'rocr=$ROCR_VISIBLE_DEVICES"', user=user.uid)
        assert r.returncode == 0, r.stderr
        return dict(f.split("=", 1) for f in r.stdout.split())
    finally:
        d.alps("release", "--job", job, check=True)


def test_exec_rank_visible_devices_nvidia(world):
    """alps exec --rank: the rank's GPUs of the placement plan (DGX-2: 16
    NVIDIA GPUs, 4 tasks: 4 each) under both NVIDIA names."""
    e = _exec_rank_env(world.daemon, world.ref, world.users.victim, 4, 2)
    assert e["cuda"] == e["nv"] == "8,9,10,11", e
    assert e["rocr"] == "", e


def test_exec_rank_visible_devices_amd(world):
    """The same on an AMD node (Tioga: MI250X GCDs): ROCR_VISIBLE_DEVICES."""
    tioga = os.path.join(SRCDIR, "tests", "data", "topologies", "mpibind-eas-tioga.xml")
    dd = os.path.join(world.dir, "amd")
    os.makedirs(dd)
    d = Daemon(dd, f'[topology]\nxml = "{tioga}"\n').start()
    try:
        d.alps("pull", "--quiet", world.ref, check=True)
        e = _exec_rank_env(d, world.ref, world.users.victim, 8, 3)
        assert e["rocr"] != "" and "," not in e["rocr"], e
        assert e["cuda"] == e["nv"] == "", e
    finally:
        rc = d.stop()
        d.check_log_clean()
    assert rc == 0


def test_attach_keeps_the_tasks_pmix_variables(world):
    """PMIx variables already in the task's environment at attach win over
    the image's and the EDF's when the job has the PMIx hook on; without
    the hook the usual order (image, then EDF, over the task's) stands."""
    v = world.users.victim
    on = user_edf(v, "pmon.toml", f'image = "{world.ref}"\n[annotations]\n'
                  '"com.hooks.pmix.enabled" = "true"\n[env]\nPMIX_RANK = "99"\n')
    off = user_edf(v, "pmoff.toml", f'image = "{world.ref}"\n[env]\nPMIX_RANK = "99"\n')
    got = {}
    for job, edf in (("pma1", on), ("pma2", off)):
        world.daemon.alps("prepare", "--job", job, "--user", v.name, "--environment", edf,
                          check=True)
        try:
            with world.daemon.conn() as c:
                r = c.pb.Request()
                r.attach.job, r.attach.uid, r.attach.ntasks = job, v.uid, 1
                r.attach.nodelist, r.attach.slurm_job_id = "n1", 7
                r.attach.env.extend(["PMIX_SERVER_TMPDIR=/live", "PMIX_RANK=3",
                                     "SLURM_PMIXP_ABORT_AGENT_PORT=1234"])
                resp = c.call(r)[1]
                assert resp.status == 0, resp.message
                got[job] = dict(e.split("=", 1) for e in resp.attach_reply.env)
        finally:
            world.daemon.alps("release", "--job", job, check=True)
    assert got["pma1"]["PMIX_SERVER_TMPDIR"] == "/live", got["pma1"]
    assert got["pma1"]["PMIX_RANK"] == "3"
    assert got["pma1"]["SLURM_PMIXP_ABORT_AGENT_PORT"] == "1234"
    assert got["pma2"]["PMIX_SERVER_TMPDIR"] == "/stale/from/image", got["pma2"]
    assert got["pma2"]["PMIX_RANK"] == "99"


def test_pmix_site_default_annotation_off_and_missing_dir(world):
    """[hooks.pmix] enabled = true: every job gets the directories unless
    its EDF says "false"; a directory missing on the host fails the prepare
    naming the option."""
    v = world.users.victim
    spool = os.path.join(world.dir, "s", "spool")
    dd = os.path.join(world.dir, "site-on")
    os.makedirs(dd)
    d = Daemon(dd, f'[hooks.pmix]\nenabled = true\ndirectories = ["{spool}"]\n').start()
    try:
        d.alps("pull", "--quiet", world.ref, check=True)
        seen = {}
        for job, ann in (("pmd1", ""), ("pmd2", '[annotations]\n"com.hooks.pmix.enabled" = '
                                                '"false"\n')):
            edf = user_edf(v, f"{job}.toml", f'image = "{world.ref}"\n{ann}')
            d.alps("prepare", "--job", job, "--user", v.name, "--environment", edf, check=True)
            r = d.alps("exec", "--job", job, "--", "sh", "-c", f"test -d {spool} && echo yes",
                       user=v.uid)
            seen[job] = r.stdout.strip()
            d.alps("release", "--job", job, check=True)
        assert seen == {"pmd1": "yes", "pmd2": ""}, seen
    finally:
        rc = d.stop()
        d.check_log_clean()
    assert rc == 0
    dd = os.path.join(world.dir, "site-missing")
    os.makedirs(dd)
    d = Daemon(dd, '[hooks.pmix]\nenabled = true\ndirectories = ["/nonexistent/slurmd"]\n')
    d.start()
    try:
        d.alps("pull", "--quiet", world.ref, check=True)
        edf = user_edf(v, "pmd3.toml", f'image = "{world.ref}"\n')
        r = d.alps("prepare", "--job", "pmd3", "--user", v.name, "--environment", edf)
        assert r.returncode != 0
        assert "the pmix hook: the host directory /nonexistent/slurmd is missing" in r.stderr
        assert "hooks.pmix.directories" in r.stderr, r.stderr
    finally:
        rc = d.stop()
        d.check_log_clean()
    assert rc == 0
