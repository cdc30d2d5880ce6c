"""The registry client against a real registry (docker-registry), through
tests/tools/registry_fetch: pulls by tag and digest, index platform
selection, Docker schema 2, zstd layers, HTTPS with a private CA, Basic and
token auth, mirrors, retries, resume, integrity and error reporting.

Fetched blobs are compared byte for byte with what skopeo copies out of the
same registry."""

import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import registry_fixture as rf  # noqa: E402

BIG = 300 * 1024        # a layer large enough to cut in the middle
HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
OTHER_ARCH = "arm64" if HOST_ARCH != "arm64" else "amd64"


def tool():
    path = os.path.join(os.environ.get("ALPS_BUILDDIR", "."), "tests", "tools", "registry_fetch")
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} is not built (set ALPS_BUILDDIR)")
    return path


def fetch(ref, out, *args, ok=True, timeout=120):
    """Run registry_fetch; returns (summary or error dict, stderr, seconds)."""
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1")
    start = time.monotonic()
    r = subprocess.run([tool(), "--timeout", "10", *args, ref, str(out)], capture_output=True,
                       text=True, timeout=timeout, env=env)
    took = time.monotonic() - start
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        doc = None
    if ok and r.returncode != 0:
        pytest.fail(f"registry_fetch {ref} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    if not ok:
        assert r.returncode == 1, f"expected a clean failure:\n{r.stdout}\n{r.stderr}"
        assert doc and "error" in doc, r.stdout
        assert "ERROR: AddressSanitizer" not in r.stderr and "LeakSanitizer" not in r.stderr, r.stderr
        return doc["error"], r.stderr, took
    return doc, r.stderr, took


def blob(out, digest):
    algo, hexd = digest.split(":", 1)
    with open(os.path.join(str(out), "blobs", algo, hexd), "rb") as f:
        return f.read()


def blob_exists(out, digest):
    algo, hexd = digest.split(":", 1)
    return os.path.exists(os.path.join(str(out), "blobs", algo, hexd))


# ---------------------------------------------------------------- the world

class World:
    """A registry (plain HTTP) holding the test images, built once."""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rf.require_tools("docker-registry", "umoci", "skopeo", "openssl")
    w = World()
    w.dir = tmp_path_factory.mktemp("world")
    w.registry = rf.Registry(w.dir).start()
    host = w.registry.host
    layout = rf.build_image(w.dir, "multi", [
        {"etc/alps-one": b"one\n"},
        {"opt/big.bin": rf.random_bytes(BIG, "big")},
        {"usr/share/three": b"three\n" * 100},
    ], config={"config.env": ["FOO=bar", "PATH=/usr/bin:/bin"], "config.cmd": "/bin/sh",
               "config.workingdir": "/opt",
               "config.label": ["org.opencontainers.image.source=https://example.com/src",
                                "org.opencontainers.image.revision=abc123"]})
    rf.push(layout, "multi", host, "test/multi", "v1")
    rf.push(layout, "multi", host, "test/v2s2", "v1", fmt="v2s2")
    rf.build_image(w.dir, "zstd", [{"zstd/data": rf.random_bytes(20000, "zstd")}], layout=layout)
    rf.push(layout, "zstd", host, "test/zstd", "v1", compress="zstd")
    rf.build_image(w.dir, "host", [{"arch": HOST_ARCH.encode()}], layout=layout)
    rf.build_image(w.dir, "other", [{"arch": OTHER_ARCH.encode()}], layout=layout,
                   arch=OTHER_ARCH)
    variant = "v8" if OTHER_ARCH == "arm64" else None
    rf.add_index(layout, "index", [("host", "linux", HOST_ARCH, None),
                                   ("other", "linux", OTHER_ARCH, variant)])
    rf.push(layout, "index", host, "test/index", "v1", all_images=True)
    w.layout = layout
    w.reference = rf.pull_oci(host, "test/multi", "v1", str(w.dir / "reference"))
    yield w
    w.registry.stop()


def check_same_as_skopeo(summary, out, reference, tag):
    """Manifest, config and layers equal skopeo's copy byte for byte."""
    assert summary["manifest_digest"] == reference.manifest_digest(tag)
    m = reference.manifest(tag)
    assert summary["config"]["digest"] == m["config"]["digest"]
    assert [l["digest"] for l in summary["layers"]] == [l["digest"] for l in m["layers"]]
    for d in [summary["manifest_digest"], m["config"]["digest"]] + [l["digest"] for l in m["layers"]]:
        assert blob(out, d) == reference.blob(d), d
        assert rf.sha256_digest(blob(out, d)) == d


# ---------------------------------------------------------------- pulls

def test_pull_by_tag(world, tmp_path):
    s, _, _ = fetch(f"{world.registry.host}/test/multi:v1", tmp_path)
    assert s["reference"] == f"{world.registry.host}/test/multi:v1"
    assert s["manifest_media_type"] == "application/vnd.oci.image.manifest.v1+json"
    assert s["endpoint"] == f"http://{world.registry.host}"
    assert len(s["layers"]) == 3
    assert all(l["compression"] == "gzip" for l in s["layers"])
    c = s["config"]
    assert "FOO=bar" in c["env"]
    assert c["cmd"] == ["/bin/sh"]
    assert c["working_dir"] == "/opt"
    assert c["labels"]["org.opencontainers.image.source"] == "https://example.com/src"
    assert c["labels"]["org.opencontainers.image.revision"] == "abc123"
    assert len(c["diff_ids"]) == 3
    check_same_as_skopeo(s, tmp_path, world.reference, "v1")
    # Each blob was asked for once, by the client (user agent "alps").
    gets = world.registry.blob_gets()
    for l in s["layers"]:
        assert any(l["digest"] in g for g in gets)


def test_pull_by_digest_and_docker_prefix(world, tmp_path):
    digest = world.reference.manifest_digest("v1")
    s, _, _ = fetch(f"docker://{world.registry.host}/test/multi@{digest}", tmp_path)
    assert s["manifest_digest"] == digest
    assert s["index_digest"] is None
    check_same_as_skopeo(s, tmp_path, world.reference, "v1")


def test_enroot_form_and_parallel_layers(world, tmp_path):
    s, _, _ = fetch(f"alice@{world.registry.host}#test/multi:v1", tmp_path, "--enroot",
                    "--jobs", "3")
    check_same_as_skopeo(s, tmp_path, world.reference, "v1")


def test_index_selects_platform(world, tmp_path):
    host = world.registry.host
    index = json.loads(rf.Layout(world.layout.path).blob(
        world.layout.manifest_digest("index")))
    by_arch = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
    s, _, _ = fetch(f"{host}/test/index:v1", tmp_path / "host")
    assert s["index_digest"] == world.layout.manifest_digest("index")
    assert s["manifest_digest"] == by_arch[HOST_ARCH]
    assert s["config"]["architecture"] == HOST_ARCH
    assert blob(tmp_path / "host", s["layers"][0]["digest"])
    plat = f"linux/{OTHER_ARCH}"
    s, _, _ = fetch(f"{host}/test/index:v1", tmp_path / "other", "--platform", plat)
    assert s["manifest_digest"] == by_arch[OTHER_ARCH]
    assert s["config"]["architecture"] == OTHER_ARCH
    e, _, _ = fetch(f"{host}/test/index:v1", tmp_path / "none", "--platform", "linux/s390x",
                    ok=False)
    assert e["code"] == "not found"
    assert "no image for linux/s390x" in e["message"]
    assert f"linux/{HOST_ARCH}" in e["message"]


def test_single_manifest_of_other_platform_is_refused(world, tmp_path):
    s, _, _ = fetch(f"{world.registry.host}/test/multi:v1", tmp_path / "a")
    e, _, _ = fetch(f"{world.registry.host}/test/multi:v1", tmp_path / "b", "--platform",
                    "linux/s390x", ok=False)
    assert e["code"] == "unsupported"
    assert f"the image is for linux/{HOST_ARCH}" in e["message"]


def test_docker_schema2(world, tmp_path):
    s, _, _ = fetch(f"{world.registry.host}/test/v2s2:v1", tmp_path)
    assert s["manifest_media_type"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert all(l["media_type"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
               for l in s["layers"])
    for l in s["layers"]:
        assert rf.sha256_digest(blob(tmp_path, l["digest"])) == l["digest"]


def test_zstd_layer(world, tmp_path):
    s, _, _ = fetch(f"{world.registry.host}/test/zstd:v1", tmp_path)
    assert [l["compression"] for l in s["layers"]] == ["zstd"]
    assert s["layers"][0]["media_type"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert blob(tmp_path, s["layers"][0]["digest"])[:4] == b"\x28\xb5\x2f\xfd"


def test_unknown_tag_and_repository(world, tmp_path):
    e, _, _ = fetch(f"{world.registry.host}/test/multi:nope", tmp_path, ok=False)
    assert e["code"] == "not found"
    assert f"manifest {world.registry.host}/test/multi:nope" in e["message"]
    assert "MANIFEST_UNKNOWN" in e["message"]
    e, _, _ = fetch(f"{world.registry.host}/test/absent:v1", tmp_path, ok=False)
    assert e["code"] == "not found"


def test_invalid_reference(tmp_path):
    e, _, _ = fetch("Bad/Name:v1", tmp_path, ok=False)
    assert e["code"] == "invalid argument"
    assert "invalid image reference" in e["message"]


def test_unreachable_registry(tmp_path):
    port = rf.free_port()
    e, _, _ = fetch(f"127.0.0.1:{port}/x:v1", tmp_path, "--retries", "0", ok=False)
    assert e["code"] == "unavailable"
    assert f"127.0.0.1:{port}" in e["message"]


# ---------------------------------------------------------------- TLS

def test_https_with_registry_ca(world, tmp_path):
    tls = rf.make_tls(tmp_path)
    with rf.Registry(tmp_path, storage_dir=world.registry.storage, tls=tls, name="tls") as reg:
        s, _, _ = fetch(f"{reg.host}/test/multi:v1", tmp_path / "ok", "--ca",
                        f"{reg.host}={tls['ca']}")
        assert s["endpoint"] == f"https://{reg.host}"
        check_same_as_skopeo(s, tmp_path / "ok", world.reference, "v1")
        # Without the CA: a verification failure, and no downgrade to HTTP.
        e, _, _ = fetch(f"{reg.host}/test/multi:v1", tmp_path / "bad", ok=False)
        assert e["code"] == "unavailable"
        assert "TLS" in e["message"] and "certificate" in e["message"]


# ---------------------------------------------------------------- auth

def test_basic_auth(world, tmp_path):
    pw = rf.htpasswd_file(tmp_path, {"alice": "s3cret"})
    with rf.Registry(tmp_path, storage_dir=world.registry.storage, htpasswd=pw,
                     name="basic") as reg:
        ref = f"{reg.host}/test/multi:v1"
        s, _, _ = fetch(ref, tmp_path / "ok", "--cred", "alice:s3cret")
        check_same_as_skopeo(s, tmp_path / "ok", world.reference, "v1")
        e, _, _ = fetch(ref, tmp_path / "bad", "--cred", "alice:wrong", ok=False)
        assert e["code"] == "permission denied"
        assert "401" in e["message"]
        e, _, _ = fetch(ref, tmp_path / "none", ok=False)
        assert e["code"] == "permission denied"
        assert "no credentials" in e["message"]


def test_basic_auth_from_docker_config(world, tmp_path):
    pw = rf.htpasswd_file(tmp_path, {"bob": "pa:ss"})
    with rf.Registry(tmp_path, storage_dir=world.registry.storage, htpasswd=pw,
                     name="dcfg") as reg:
        cfg = tmp_path / "config.json"
        auth = rf.base64.b64encode(b"bob:pa:ss").decode()
        cfg.write_text(json.dumps({"auths": {f"http://{reg.host}/v2/": {"auth": auth}}}))
        s, _, _ = fetch(f"{reg.host}/test/multi:v1", tmp_path / "ok", "--docker-config",
                        str(cfg))
        assert len(s["layers"]) == 3


def test_bearer_token_flow(world, tmp_path):
    with rf.TokenServer(tmp_path, users={"alice": "tok3n"}) as ts:
        with rf.Registry(tmp_path, storage_dir=world.registry.storage, token=ts,
                         name="token") as reg:
            ref = f"{reg.host}/test/multi:v1"
            s, _, _ = fetch(ref, tmp_path / "ok", "--cred", "alice:tok3n", "--jobs", "3")
            check_same_as_skopeo(s, tmp_path / "ok", world.reference, "v1")
            # One token served every request (cached until expiry).
            assert s["stats"]["token_fetches"] == 1
            assert len(ts.requests) == 1
            req = ts.requests[0]
            assert req["query"]["scope"] == ["repository:test/multi:pull"]
            assert req["query"]["service"] == [ts.service]
            assert req["authorization"].startswith("Basic ")
            e, _, _ = fetch(ref, tmp_path / "bad", "--cred", "alice:nope", ok=False)
            assert e["code"] == "permission denied"
            assert "token" in e["message"]


def test_redirect_to_blob_storage_drops_credentials(world, tmp_path):
    pw = rf.htpasswd_file(tmp_path, {"alice": "s3cret"})
    blobs = {d: world.reference.blob(d) for d in
             [l["digest"] for l in world.reference.manifest("v1")["layers"]]}
    with rf.Registry(tmp_path, storage_dir=world.registry.storage, htpasswd=pw,
                     name="redir") as reg, \
            rf.BlobStore(blobs) as store, rf.FaultProxy(reg.host) as proxy:
        proxy.redirect(r"/blobs/sha256:(?!%s)" % world.reference.manifest("v1")["config"]["digest"][7:],
                       store.url)
        s, _, _ = fetch(f"{proxy.host}/test/multi:v1", tmp_path / "out", "--cred",
                        "alice:s3cret")
        check_same_as_skopeo(s, tmp_path / "out", world.reference, "v1")
        assert len(store.requests) == 3
        assert all(r["authorization"] is None for r in store.requests)
        # ... while the registry itself did get them.
        assert all(r["headers"].get("authorization", "").startswith("Basic ")
                   for r in proxy.seen("/manifests/"))


# ---------------------------------------------------------------- mirrors

def test_mirror_is_tried_first(world, tmp_path):
    with rf.FaultProxy(world.registry.host) as mirror, \
            rf.FaultProxy(world.registry.host) as upstream:
        s, _, _ = fetch(f"{upstream.host}/test/multi:v1", tmp_path / "a", "--mirror",
                        f"{upstream.host}={mirror.host}")
        assert s["endpoint"] == f"http://{mirror.host}"
        assert mirror.seen("/blobs/") and not upstream.seen("/v2/test")
        # A mirror without the image: the upstream serves it.
        mirror.fail(r"/manifests/", status=404, count=None)
        s, _, _ = fetch(f"{upstream.host}/test/multi:v1", tmp_path / "b", "--mirror",
                        f"{upstream.host}={mirror.host}")
        assert s["endpoint"] == f"http://{upstream.host}"
        check_same_as_skopeo(s, tmp_path / "b", world.reference, "v1")


# ---------------------------------------------------------------- faults

def big_layer(world):
    return [l for l in world.reference.manifest("v1")["layers"] if l["size"] > BIG // 2][0]


def test_retry_after_500(world, tmp_path):
    with rf.FaultProxy(world.registry.host) as proxy:
        proxy.fail(r"/manifests/v1$", status=500, count=2,
                   body=b'{"errors":[{"code":"UNKNOWN","message":"boom"}]}')
        s, err, _ = fetch(f"{proxy.host}/test/multi:v1", tmp_path)
        assert s["stats"]["retries"] == 2
        assert len(proxy.seen(r"/manifests/v1$")) == 3
        assert "HTTP 500" in err and "boom" in err
        check_same_as_skopeo(s, tmp_path, world.reference, "v1")
        # More failures than retries: the last error is reported.
        proxy.fail(r"/manifests/v1$", status=503, count=10)
        e, _, _ = fetch(f"{proxy.host}/test/multi:v1", tmp_path / "x", "--retries", "1",
                        ok=False)
        assert e["code"] == "unavailable" and "HTTP 503" in e["message"]


def test_429_retry_after_is_honoured(world, tmp_path):
    layer = big_layer(world)
    with rf.FaultProxy(world.registry.host) as proxy:
        proxy.fail("/blobs/" + layer["digest"], status=429, count=1,
                   headers={"Retry-After": "2"})
        s, err, took = fetch(f"{proxy.host}/test/multi:v1", tmp_path)
        assert took >= 2.0
        assert "429" in err
        assert s["stats"]["retries"] == 1
        assert blob(tmp_path, layer["digest"]) == world.reference.blob(layer["digest"])


def test_cut_blob_resumes_with_range(world, tmp_path):
    layer = big_layer(world)
    with rf.FaultProxy(world.registry.host) as proxy:
        proxy.cut("/blobs/" + layer["digest"], after=100000, count=1)
        s, _, _ = fetch(f"{proxy.host}/test/multi:v1", tmp_path)
        seen = proxy.seen("/blobs/" + layer["digest"])
        assert len(seen) == 2
        assert "range" not in seen[0]["headers"]
        assert seen[1]["headers"]["range"] == "bytes=100000-"
        assert s["stats"]["resumes"] == 1
        assert blob(tmp_path, layer["digest"]) == world.reference.blob(layer["digest"])


def test_corrupted_blob_is_an_integrity_error(world, tmp_path):
    layer = big_layer(world)
    with rf.FaultProxy(world.registry.host) as proxy:
        proxy.corrupt("/blobs/" + layer["digest"], offset=5000)
        e, _, _ = fetch(f"{proxy.host}/test/multi:v1", tmp_path, ok=False)
        assert e["code"] == "integrity error"
        assert f"blob {layer['digest']} does not match its digest: got sha256:" in e["message"]
        assert not blob_exists(tmp_path, layer["digest"])


def test_corrupted_manifest_is_an_integrity_error(world, tmp_path):
    digest = world.reference.manifest_digest("v1")
    with rf.FaultProxy(world.registry.host) as proxy:
        proxy.corrupt(r"/manifests/", offset=40)
        e, _, _ = fetch(f"{proxy.host}/test/multi@{digest}", tmp_path, ok=False)
        assert e["code"] in ("integrity error", "invalid argument")
        assert digest in e["message"]
        assert not blob_exists(tmp_path, digest)


def test_corrupted_manifest_by_tag_fails_docker_content_digest(world, tmp_path):
    with rf.FaultProxy(world.registry.host) as proxy:
        proxy.corrupt(r"/manifests/v1$", offset=40)
        e, _, _ = fetch(f"{proxy.host}/test/multi:v1", tmp_path, ok=False)
        assert e["code"] == "integrity error"
        assert world.reference.manifest_digest("v1") in e["message"]


def test_foreign_layer_falls_back_to_its_urls(world, tmp_path):
    """A non-distributable layer the registry does not have comes from the
    descriptor's URL, verified like any other blob."""
    m = world.reference.manifest("v1")
    first = m["layers"][0]
    first["mediaType"] = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    with rf.BlobStore({first["digest"]: world.reference.blob(first["digest"])}) as store, \
            rf.FaultProxy(world.registry.host) as proxy:
        first["urls"] = [f"{store.url}/blobs/{first['digest']}"]
        proxy.serve(r"/manifests/foreign$", json.dumps(m).encode(),
                    headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        proxy.fail("/blobs/" + first["digest"], status=404, count=None)
        s, _, _ = fetch(f"{proxy.host}/test/multi:foreign", tmp_path)
        assert s["layers"][0]["foreign"] is True
        assert len(store.requests) == 1 and store.requests[0]["authorization"] is None
        assert blob(tmp_path, first["digest"]) == world.reference.blob(first["digest"])


def test_schema1_manifest_is_refused(world, tmp_path):
    with rf.FaultProxy(world.registry.host) as proxy:
        proxy.serve(r"/v2/test/old/manifests/v1$", rf.SCHEMA1_MANIFEST,
                    headers={"Content-Type": rf.SCHEMA1_TYPE})
        e, _, _ = fetch(f"{proxy.host}/test/old:v1", tmp_path, ok=False)
        assert e["code"] == "unsupported"
        assert "schema 1" in e["message"]
        # The request listed every manifest and index type, schema 1 not.
        accept = proxy.seen(r"/manifests/v1$")[0]["headers"]["accept"]
        for t in ("application/vnd.oci.image.index.v1+json",
                  "application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.list.v2+json",
                  "application/vnd.docker.distribution.manifest.v2+json"):
            assert t in accept
