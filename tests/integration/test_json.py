"""Every command's --json output against doc/json.md.

The document's field tables are the schema: for each command, every field
the output holds must be documented with its type, and every field the
table marks required must be there.  So the test and the reference cannot
drift apart.  Run against a real alpsd and a real registry."""
import json
import os
import re
import subprocess

import pytest

import registry_fixture as rf
from conftest import binary

SRCDIR = os.environ.get("ALPS_SRCDIR", os.path.join(os.path.dirname(__file__), "..", ".."))
TYPES = {"boolean": bool, "string": str, "integer": int, "number": (int, float),
         "object": dict, "array": list, "null": type(None)}


def load_schemas():
    """{section: {path: (types, required, free)}} from doc/json.md's tables.

    A row reads | `path` | type[/type] | required? | meaning |; a path goes
    down with '.' and into arrays with '[]'.  The type "object*" is a
    free-form object: what is below it is not checked."""
    schemas, section = {}, None
    with open(os.path.join(SRCDIR, "doc", "json.md")) as f:
        for line in f:
            m = re.match(r"^### schema: (\S+)", line)
            if m:
                section = schemas.setdefault(m.group(1), {})
                continue
            m = re.match(r"^\| `([^`]+)` \| ([a-z/*]+) \| (yes|no) \|", line)
            if m and section is not None:
                names = m.group(2).split("/")
                free = any(n.endswith("*") for n in names)
                types = tuple(TYPES[n.rstrip("*")] for n in names)
                section[m.group(1)] = (types, m.group(3) == "yes", free)
    return schemas


SCHEMAS = load_schemas()


def walk(value, path=""):
    """(path, value) of every field below value."""
    if isinstance(value, dict):
        for k, v in value.items():
            p = f"{path}.{k}" if path else k
            yield p, v
            yield from walk(v, p)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v, f"{path}[]")


def check(doc, name):
    schema = SCHEMAS[name]
    free = [p for p, (_, _, fr) in schema.items() if fr]
    seen = set()
    for path, value in walk(doc):
        if any(path.startswith(f + ".") or path.startswith(f + "[]") for f in free):
            continue
        assert path in schema, f"{name}: field {path} is not in doc/json.md"
        types = schema[path][0]
        if isinstance(value, bool):
            ok = bool in types
        else:
            ok = isinstance(value, types) and not (isinstance(value, bool))
        assert ok, f"{name}: {path} = {value!r} is not {types}"
        seen.add(path)
    for path, (_, required, _) in schema.items():
        parent = path.rsplit(".", 1)[0] if "." in path else ""
        # Required fields of array elements only matter when elements exist.
        if required and (parent == "" or parent in seen):
            assert path in seen, f"{name}: required field {path} missing in {doc}"


def one_doc(r):
    """The whole stdout is one JSON document."""
    return json.loads(r.stdout)


def test_doc_lists_every_command():
    cmds = ["status", "metrics", "pull.progress", "pull.done", "images", "inspect", "rm", "gc",
            "pin", "df", "verify", "squash", "unsquash", "prepare", "pull.notice", "outdated",
            "release", "jobs", "edf-check", "topology", "place", "endpoints", "prolog",
            "epilog", "error", "import.progress", "import.done", "export", "resolve"]
    assert sorted(SCHEMAS) == sorted(cmds)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rf.require_tools("docker-registry", "umoci", "skopeo", "busybox")
    if os.geteuid() != 0:
        pytest.skip("needs root (job containers)")
    import images
    w = type("World", (), {})()
    w.dir = tmp_path_factory.mktemp("jsonworld")
    os.chmod(w.dir, 0o755)
    w.registry = rf.Registry(w.dir).start()
    layout = rf.build_image(w.dir, "bb", [{"etc/base": b"base\n"}],
                            config={"config.cmd": ["cat", "/etc/base"],
                                    "config.label": ["org.x=1"]})
    images.umoci_modify(layout, "bb", w.dir, images.busybox_root, "bb")
    rf.push(layout, "bb", w.registry.host, "test/bb", "v1")
    w.ref = f"{w.registry.host}/test/bb:v1"
    yield w
    w.registry.stop()


def test_every_command(daemon, world, tmpdir_short):
    d = daemon
    # pull: JSON lines, each an object with ok
    r = d.alps("pull", world.ref, "--json", check=True)
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert lines and all(isinstance(l, dict) and l["ok"] is True for l in lines)
    for l in lines[:-1]:
        check(l, "pull.notice" if l["event"] in ("notice", "warning") else "pull.progress")
    check(lines[-1], "pull.done")
    out = one_doc(d.alps("outdated", "--json", check=True))
    check(out, "outdated")
    assert [i["status"] for i in out["images"]] == ["up_to_date"]
    out = one_doc(d.alps("outdated", "--json", "nope/none:1", check=True))
    check(out, "outdated")
    assert out["images"][0]["status"] == "not_cached"
    check(one_doc(d.alps("status", "--json", check=True)), "status")
    m = one_doc(d.alps("metrics", "--json", check=True))
    check(m, "metrics")
    assert "alps_pulls_total{result=\"ok\"} 1\n" in m["text"]
    imgs = one_doc(d.alps("images", "--json", check=True))
    check(imgs, "images")
    assert imgs["images"][0]["squashfs_size"] > 0
    assert imgs["totals"]["squashfs_size"] >= imgs["images"][0]["squashfs_size"]
    check(one_doc(d.alps("images", "--json", "nomatch*", check=True)), "images")
    check(one_doc(d.alps("inspect", world.ref, "--json", check=True)), "inspect")
    out = os.path.join(tmpdir_short, "bb.sqsh")
    check(one_doc(d.alps("export", world.ref, out, "--json", check=True)), "export")
    check(one_doc(d.alps("topology", "--json", check=True)), "topology")
    check(one_doc(d.alps("place", "--tasks", "2", "--json", check=True)), "place")
    check(one_doc(d.alps("endpoints", "--json", check=True)), "endpoints")
    r = d.alps("prepare", "--job", "j1", "--user", "65534", "--image", world.ref, "--json",
               check=True)
    check(one_doc(r), "prepare")
    jobs = one_doc(d.alps("jobs", "--json", check=True))
    check(jobs, "jobs")
    assert all(isinstance(m, dict) for m in jobs["jobs"][0]["mounts"])
    check(one_doc(d.alps("release", "--job", "j1", "--json", check=True)), "release")
    e = os.path.join(tmpdir_short, "e.toml")
    with open(e, "w") as f:
        f.write(f'image = "{world.ref}"\n')
    check(one_doc(d.alps("edf", "check", e, "--json", check=True)), "edf-check")
    env = dict(os.environ, SLURM_JOB_ID="77")
    check(one_doc(d.alps("prolog", "--json", env=env, check=True)), "prolog")
    check(one_doc(d.alps("epilog", "--json", env=env, check=True)), "epilog")
    # the cache commands
    check(one_doc(d.alps("df", "--json", check=True)), "df")
    check(one_doc(d.alps("gc", "--dry-run", "--json", check=True)), "gc")
    check(one_doc(d.alps("verify", "--json", check=True)), "verify")
    r = d.alps("--json", "pin", world.ref, "nope/nothing:1")
    doc = one_doc(r)
    check(doc, "pin")
    assert r.returncode == 1 and [x["ok"] for x in doc["results"]] == [True, False]
    check(one_doc(d.alps("unpin", world.ref, "--json", check=True)), "pin")
    src = os.path.join(tmpdir_short, "sq")
    os.makedirs(os.path.join(src, "d"))
    with open(os.path.join(src, "d", "f"), "w") as f:
        f.write("x\n")
    sq = os.path.join(tmpdir_short, "sq.sqsh")
    check(one_doc(d.alps("squash", src, sq, "--json", check=True)), "squash")
    check(one_doc(d.alps("--json", "unsquash", sq, os.path.join(tmpdir_short, "un"),
                         check=True)), "unsquash")
    res = one_doc(d.alps("resolve", world.ref, "--json", check=True))
    check(res, "resolve")
    assert res["pinned"] == world.ref + "@" + res["digest"]
    # rm: one document for all its operands, the failure too
    r = d.alps("rm", world.ref, "nope/nothing:1", "--json")
    assert r.returncode == 1
    doc = one_doc(r)
    check(doc, "rm")
    assert doc["ok"] is False and [x["ok"] for x in doc["results"]] == [True, False]
    assert doc["results"][1]["code"] == "not_found" and doc["code"] == "not_found"
    bad = os.path.join(tmpdir_short, "bad.toml")
    with open(bad, "w") as f:
        f.write('imagee = "x"\n')
    r = d.alps("edf", "check", bad, "--json")
    assert r.returncode == 1
    doc = one_doc(r)
    check(doc, "edf-check")
    assert doc["ok"] is False and doc["code"] == "invalid_argument" and doc["errors"]


def test_import_json(daemon, tmpdir_short):
    """alps import --json: JSON lines, progress then the result; a failure
    is an error line."""
    tree = os.path.join(tmpdir_short, "tree")
    os.makedirs(os.path.join(tree, "etc"))
    with open(os.path.join(tree, "etc", "f"), "w") as f:
        f.write("x\n")
    sq = os.path.join(tmpdir_short, "t.sqsh")
    subprocess.run([binary("alps"), "squash", tree, sq], check=True, capture_output=True)
    r = daemon.alps("import", "--json", "--tag", "local/json:1", sq, check=True)
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    for l in lines[:-1]:
        check(l, "import.progress")
    check(lines[-1], "import.done")
    assert lines[-1]["format"] == "squashfs" and lines[-1]["private"] is False
    r = daemon.alps("import", "--json", sq)
    last = json.loads(r.stdout.splitlines()[-1])
    check(last, "error")
    assert r.returncode == 1 and last["code"] == "invalid_argument"


@pytest.mark.parametrize("argv,code,status", [
    (["images", "a*", "extra"], "usage_error", 2),
    (["images", "--format", "{{.Nope}}"], "usage_error", 2),
    (["place", "--json"], "usage_error", 2),
    (["inspect", "nope/none:1"], "not_found", 1),
    (["release"], "usage_error", 2),
    (["frobnicate"], "usage_error", 2),
])
def test_errors_are_json(daemon, argv, code, status):
    r = daemon.alps("--json", *argv)
    assert r.returncode == status, r
    doc = one_doc(r)
    check(doc, "error")
    assert doc["code"] == code and doc["message"]
    assert r.stderr == "", r.stderr


def test_pull_error_is_a_json_line(daemon):
    r = daemon.alps("pull", "--json", "127.0.0.1:1/none/x:1")
    assert r.returncode != 0
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    check(lines[-1], "error")
    assert lines[-1]["event"] == "error" and lines[-1]["ok"] is False
    notices = [l for l in lines if l.get("event") == "notice"]
    assert notices and "connection refused, retry 1 of" in notices[0]["message"]
    for l in notices:
        check(l, "pull.notice")


def test_daemon_unreachable_is_json(tmpdir_short):
    r = subprocess.run([binary("alps"), "--socket", os.path.join(tmpdir_short, "none.sock"),
                        "status", "--json"], capture_output=True, text=True)
    assert r.returncode == 3
    doc = json.loads(r.stdout)
    check(doc, "error")
    assert doc["code"] == "unavailable"
