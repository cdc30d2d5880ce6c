"""alps topology / alps place against a real alpsd loading hwloc XML of real
machines (tests/data/topologies/)."""
import json
import os
import signal
import time

from conftest import SRCDIR

TOPO = os.path.join(SRCDIR, "tests", "data", "topologies")
TIOGA = os.path.join(TOPO, "mpibind-eas-tioga.xml")
LASSEN = os.path.join(TOPO, "mpibind-coral-lassen.xml")


def tioga_daemon(daemon_factory, extra=""):
    return daemon_factory(f'[topology]\nxml = "{TIOGA}"\nreserved_cores = "first-per-l3"\n'
                          f'hw_threads = "first"\n{extra}')


def test_topology_json(daemon_factory):
    d = tioga_daemon(daemon_factory)
    t = json.loads(d.alps("--json", "topology", check=True).stdout)
    assert len(t["gpus"]) == 8
    assert [g["nearest_nics"] for g in t["gpus"]] == [["hsi0"], ["hsi0"], ["hsi1"], ["hsi1"],
                                                      ["hsi2"], ["hsi2"], ["hsi3"], ["hsi3"]]
    assert {n["name"]: n["high_speed"] for n in t["nics"]}["ens2"] is False
    human = d.alps("topology", check=True).stdout
    assert "rsmi0" in human and "hsi3" in human


def test_place_matches_lumi_documentation(daemon_factory):
    # LUMI-G's documented CPU masks for 8 ranks, one GCD each, first core
    # of each L3 kept for the OS (docs.lumi-supercomputer.eu, distribution-binding).
    d = tioga_daemon(daemon_factory)
    p = json.loads(d.alps("--json", "place", "--tasks", "8", check=True).stdout)
    assert p["cpu_bind"] == ("mask_cpu:0xfe000000000000,0xfe00000000000000,0xfe0000,0xfe000000,"
                             "0xfe,0xfe00,0xfe00000000,0xfe0000000000")
    assert [r["gpus"] for r in p["ranks"]] == [[i] for i in range(8)]
    assert "ROCR_VISIBLE_DEVICES=0" in p["ranks"][0]["env"]
    out = d.alps("place", "--tasks", "8", "--cpu-bind", check=True).stdout
    assert out.strip() == "--cpu-bind=" + p["cpu_bind"]


def test_place_errors(daemon_factory):
    d = tioga_daemon(daemon_factory)
    r = d.alps("place", "--tasks", "8", "--gpus-per-task", "2")
    assert r.returncode == 1
    assert "need 16 GPUs; this node has 8" in r.stderr
    r = d.alps("place")
    assert r.returncode == 2 and "--tasks" in r.stderr
    r = d.alps("place", "--tasks", "x")
    assert r.returncode == 2


def test_missing_topology_is_reported_and_daemon_serves(daemon_factory):
    d = daemon_factory('[topology]\nxml = "/nonexistent/topo.xml"\n')
    r = d.alps("topology")
    assert r.returncode == 1 and "topology is not available" in r.stderr
    assert d.alps("status").returncode == 0
    assert "topology:" in d.read_log()


def test_sighup_reloads_topology(daemon_factory):
    d = tioga_daemon(daemon_factory)
    with open(d.config, "w") as f:
        f.write(f'[topology]\nxml = "{LASSEN}"\n')
    os.kill(d.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    gpus = 8
    while time.monotonic() < deadline:
        gpus = len(json.loads(d.alps("--json", "topology", check=True).stdout)["gpus"])
        if gpus == 4:
            break
        time.sleep(0.1)
    assert gpus == 4


def test_live_topology_loads(daemon):
    t = json.loads(daemon.alps("--json", "topology", check=True).stdout)
    assert t["cores"] >= 1 and t["pus"] >= 1
