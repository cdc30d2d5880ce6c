"""Host integration (doc/hooks.md): CDI devices, the built-in hooks and OCI
hooks, against fake host stacks the tests build - shared libraries with the
right sonames made with cc, device nodes made with mknod in a temp dir, a
fake libfabric.so.1 - and an image that ships its own libfabric and glibc's
loader, so the image's own loader shows which library wins.  Real alpsd,
real registry, real mounts; root only."""
import json
import os
import shutil
import stat
import subprocess
import tempfile
import textwrap
import time

import pytest

import images
import registry_fixture as rf

NOBODY = 65534

FAB_C = r'''
#include <stdio.h>
const char *cxi_who(void);
const char *fab_who(void)
{
	static char b[64];
	snprintf(b, sizeof(b), "%s+%s", WHO, cxi_who());
	return b;
}
'''
CXI_C = 'const char *cxi_who(void) { return WHO; }\n'
PROBE_C = r'''
#include <stdio.h>
#include <string.h>
const char *fab_who(void);
int main(void)
{
	char l[4096];
	printf("fabric=%s\n", fab_who());
	FILE *f = fopen("/proc/self/maps", "r");
	while (f && fgets(l, sizeof(l), f))
		if (strstr(l, "libfabric") || strstr(l, "libcxi"))
			fputs(strchr(l, '/'), stdout);
	return 0;
}
'''


def _cc(*args):
    subprocess.run(["cc", *args], check=True)


def _stack(d, who):
    """libcxi.so.1 and libfabric.so.1 (needing libcxi) of who in d."""
    os.makedirs(d, exist_ok=True)
    src = os.path.join(d, "src")
    os.makedirs(src, exist_ok=True)
    for name, text in (("cxi.c", CXI_C), ("fab.c", FAB_C)):
        with open(os.path.join(src, name), "w") as f:
            f.write(text)
    _cc("-shared", "-fPIC", f'-DWHO="{who}"', "-Wl,-soname,libcxi.so.1", "-o",
        f"{d}/libcxi.so.1", f"{src}/cxi.c")
    _cc("-shared", "-fPIC", f'-DWHO="{who}"', "-Wl,-soname,libfabric.so.1", "-o",
        f"{d}/libfabric.so.1.2.3", f"{src}/fab.c", f"-L{d}", "-l:libcxi.so.1")
    os.symlink("libfabric.so.1.2.3", f"{d}/libfabric.so.1")
    shutil.rmtree(src)


@pytest.fixture(scope="module")
def hostworld(tmp_path_factory):
    rf.require_tools("docker-registry", "umoci", "skopeo", "busybox", "cc")
    if os.geteuid() != 0:
        pytest.skip("job containers need root")
    w = type("World", (), {})()
    w.dir = str(tmp_path_factory.mktemp("hookworld"))
    os.chmod(w.dir, 0o755)
    # The host's stack.
    w.host = os.path.join(w.dir, "host")
    _stack(f"{w.host}/lib", "host")
    os.makedirs(f"{w.host}/nccl/cuda12")
    with open(f"{w.host}/nccl/plugin.c", "w") as f:
        f.write("int nccl_plugin_marker;\n")
    _cc("-shared", "-fPIC", "-Wl,-soname,libnccl-net.so", "-o",
        f"{w.host}/nccl/cuda12/libnccl-net.so", f"{w.host}/nccl/plugin.c")
    os.makedirs(f"{w.host}/dev/dri")
    for name, mode, minor in (("cxi0", 0o660, 3), ("cxi1", 0o660, 3), ("kfd", 0o666, 5),
                              ("dri/renderD128", 0o664, 5), ("gpu0", 0o600, 3)):
        os.mknod(f"{w.host}/dev/{name}", mode | stat.S_IFCHR, os.makedev(1, minor))
        os.chmod(f"{w.host}/dev/{name}", mode)
    os.makedirs(f"{w.host}/share")
    with open(f"{w.host}/share/vendor.txt", "w") as f:
        f.write("vendor data\n")
    # The image: busybox, glibc's loader and libc, its own stack, a probe.
    img = os.path.join(w.dir, "img")
    _stack(f"{img}/usr/local/imglib", "image")
    os.makedirs(f"{img}/opt")
    with open(f"{w.dir}/probe.c", "w") as f:
        f.write(PROBE_C)
    _cc("-o", f"{img}/opt/probe", f"{w.dir}/probe.c", f"-L{img}/usr/local/imglib",
        "-l:libfabric.so.1", "-l:libcxi.so.1")
    w.registry = rf.Registry(w.dir).start()
    layout = rf.build_image(w.dir, "hk", [{"etc/base": b"base\n"}],
                            config={"config.env": ["PATH=/bin:/usr/bin",
                                                   "LD_LIBRARY_PATH=/usr/local/imglib"]})

    def content(root):
        images.busybox_root(root)
        shutil.copytree(img, root, dirs_exist_ok=True, symlinks=True)
        for lib in ("/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6"):
            os.makedirs(os.path.dirname(root + lib), exist_ok=True)
            shutil.copy(os.path.realpath(lib), root + lib)

    images.umoci_modify(layout, "hk", w.dir, content, "hk")
    rf.push(layout, "hk", w.registry.host, "test/hk", "v1")
    w.ref = f"{w.registry.host}/test/hk:v1"
    # The same image declaring its own network stack (doc/hooks.md).
    rf.run(["umoci", "config", "--image", f"{layout.path}:hk", "--tag", "hkb",
            "--config.label=com.alps.network-stack=bundled"])
    rf.push(layout, "hkb", w.registry.host, "test/hk", "bundled")
    w.bundled_ref = f"{w.registry.host}/test/hk:bundled"
    yield w
    w.registry.stop()


def _conf(w, cdi, oci, cxi_default="false", libraries=None, devices=None):
    libs = libraries if libraries is not None else [f"{w.host}/lib/libfabric.so.1",
                                                     f"{w.host}/lib/libcxi.so.1"]
    devs = devices if devices is not None else [f"{w.host}/dev/cxi*"]
    return textwrap.dedent(f"""\
        [hooks]
        cdi_dirs = {json.dumps([cdi])}
        oci_dirs = {json.dumps([oci])}
        [hooks.cxi]
        enabled = {cxi_default}
        libraries = {json.dumps(libs)}
        devices = {json.dumps(devs)}
        [hooks.aws_ofi_nccl]
        variants = ["cuda12={w.host}/nccl/cuda12/libnccl-net.so"]
        env = ["NCCL_NET=AWS Libfabric"]
        [hooks.amd]
        devices = ["{w.host}/dev/kfd", "{w.host}/dev/dri/renderD*"]
        env = ["HSA_FORCE_FINE_GRAIN_PCIE=1"]
        """)


@pytest.fixture(scope="module")
def hd(pb, hostworld):
    """A daemon with the test's CDI and OCI hook directories, the image pulled."""
    from conftest import Daemon, unmount_under
    d = tempfile.mkdtemp(prefix="alps-hk-", dir="/tmp")
    os.chmod(d, 0o755)
    cdi, oci = os.path.join(d, "cdi"), os.path.join(d, "hooks.d")
    os.makedirs(cdi)
    os.makedirs(oci)
    os.makedirs(os.path.join(d, "daemon"))
    dm = Daemon(os.path.join(d, "daemon"), _conf(hostworld, cdi, oci))
    dm.start()
    dm.cdi, dm.oci, dm.w = cdi, oci, hostworld
    try:
        dm.alps("pull", "--quiet", hostworld.ref, check=True)
        yield dm
    finally:
        dm.stop()
        dm.check_log_clean()
        unmount_under(d)
        shutil.rmtree(d, ignore_errors=True)


def _edf(d, name, text):
    path = os.path.join(d.cdi, "..", name)
    with open(path, "w") as f:
        f.write(f'image = "{d.w.ref}"\n' + text)
    os.chmod(path, 0o644)
    return os.path.realpath(path)


def _prepare(d, job, edf_text, check=True):
    e = _edf(d, f"{job}.toml", edf_text)
    r = d.alps("prepare", "--job", job, "--user", str(NOBODY), "--environment", e)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def _exec(d, job, *cmd):
    return d.alps("exec", "--job", job, "--", *cmd, user=NOBODY)


def _release(d, job):
    d.alps("release", "--job", job, check=True)


def _ann(**kv):
    return "[annotations]\n" + "".join(f'{k.replace("_dot_", ".")} = "{v}"\n'
                                       for k, v in kv.items())


CXI_ON = '[annotations]\n"com.hooks.cxi.enabled" = "true"\n'
CXI_OFF = '[annotations]\n"com.hooks.cxi.enabled" = "false"\n'


def test_cxi_hook_host_stack_wins(hd):
    _prepare(hd, "hk1", CXI_ON)
    try:
        r = _exec(hd, "hk1", "/opt/probe")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == "fabric=host+host", r.stdout
        # resolved by the image's own loader from the injected directory
        assert "/opt/alps/lib/libfabric.so.1" in lines[1:], r.stdout
        assert "/opt/alps/lib/libcxi.so.1" in lines[1:], r.stdout
        r = _exec(hd, "hk1", "sh", "-c", 'echo "$FI_PROVIDER|$LD_LIBRARY_PATH"; '
                  'stat -c "%A %t %T" /dev/cxi0 /dev/cxi1')
        assert r.stdout.splitlines() == ["cxi|/opt/alps/lib:/usr/local/imglib",
                                         "crw-rw---- 1 3", "crw-rw---- 1 3"], r.stdout + r.stderr
    finally:
        _release(hd, "hk1")


def test_cxi_hook_off(hd):
    _prepare(hd, "hk2", CXI_OFF)
    try:
        r = _exec(hd, "hk2", "/opt/probe")
        assert r.stdout.splitlines()[0] == "fabric=image+image", r.stdout + r.stderr
        assert "/usr/local/imglib/libfabric.so.1.2.3" in r.stdout
        r = _exec(hd, "hk2", "sh", "-c", 'echo "[$FI_PROVIDER]"; ls /dev/cxi0; ls /opt/alps')
        assert r.stdout.splitlines()[0] == "[]", r.stdout
        assert "/dev/cxi0" in r.stderr and "/opt/alps" in r.stderr, r.stderr
    finally:
        _release(hd, "hk2")
    # absent: the site default (off here)
    _prepare(hd, "hk3", "")
    try:
        r = _exec(hd, "hk3", "/opt/probe")
        assert r.stdout.splitlines()[0] == "fabric=image+image", r.stdout
    finally:
        _release(hd, "hk3")


def test_annotation_values_checked(hd):
    r = _prepare(hd, "hk4", '[annotations]\n"com.hooks.cxi.enabled" = "yes"\n', check=False)
    assert r.returncode != 0
    assert 'com.hooks.cxi.enabled = "yes": "true" or "false"' in r.stderr, r.stderr
    r = _prepare(hd, "hk4", '[annotations]\n"com.hooks.ssh.enabled" = "true"\n', check=False)
    assert r.returncode != 0 and "SSH hook is not implemented" in r.stderr, r.stderr


def test_nccl_plugin_variant_implies_cxi(hd):
    on = ('[annotations]\n"com.hooks.aws_ofi_nccl.enabled" = "true"\n'
          '"com.hooks.aws_ofi_nccl.variant" = "cuda12"\n')
    _prepare(hd, "hk5", on)
    try:
        r = _exec(hd, "hk5", "sh", "-c", 'ls /opt/alps/lib; echo "$NCCL_NET|$FI_PROVIDER"')
        assert r.stdout.splitlines() == ["libcxi.so.1", "libfabric.so.1", "libnccl-net.so",
                                         "AWS Libfabric|cxi"], r.stdout + r.stderr
    finally:
        _release(hd, "hk5")
    r = _prepare(hd, "hk6", on.replace("cuda12", "rocm6"), check=False)
    assert r.returncode != 0
    assert 'no variant "rocm6" on this node (it has: cuda12)' in r.stderr, r.stderr
    r = _prepare(hd, "hk6", on + '"com.hooks.cxi.enabled" = "false"\n', check=False)
    assert r.returncode != 0 and "needs the CXI hook" in r.stderr, r.stderr
    r = _prepare(hd, "hk6", '[annotations]\n"com.hooks.aws_ofi_nccl.enabled" = "true"\n',
                 check=False)
    assert r.returncode != 0 and "needs com.hooks.aws_ofi_nccl.variant" in r.stderr


def test_amd_devices(hd):
    _prepare(hd, "hk7", '[annotations]\n"com.hooks.amd.enabled" = "true"\n')
    try:
        r = _exec(hd, "hk7", "sh", "-c", 'stat -c "%n %A" /dev/kfd /dev/dri/renderD128; '
                  'echo "$HSA_FORCE_FINE_GRAIN_PCIE"')
        assert r.stdout.splitlines() == ["/dev/kfd crw-rw-rw-", "/dev/dri/renderD128 crw-rw-r--",
                                         "1"], r.stdout + r.stderr
    finally:
        _release(hd, "hk7")
    _prepare(hd, "hk8", "")
    try:
        r = _exec(hd, "hk8", "ls", "/dev/kfd")
        assert r.returncode != 0
    finally:
        _release(hd, "hk8")


CDI_JSON = {
    "cdiVersion": "0.6.0", "kind": "vendor.com/gpu",
    "containerEdits": {"env": ["VENDOR_SPEC=1"]},
    "devices": [{"name": "gpu0", "containerEdits": {
        "deviceNodes": [{"path": "/dev/vgpu0", "hostPath": "HOST/dev/gpu0"}],
        "mounts": [{"hostPath": "HOST/share", "containerPath": "/opt/vendor",
                    "options": ["ro", "nosuid", "nodev", "bind"]}],
        "env": ["VENDOR_GPU=0"],
        "hooks": [{"hookName": "createContainer", "path": "SCRIPT", "args": ["hook", "OUT"]}]}}],
}
CDI_YAML = """\
cdiVersion: 0.5.0
kind: example.org/nic
devices:
  - name: nic0
    containerEdits:
      deviceNodes:
        - path: /dev/nic0
          hostPath: HOST/dev/cxi1
      env: ["NIC=0"]
"""


def test_cdi_json_and_yaml(hd, tmp_path):
    host = hd.w.host
    script, out = os.path.join(hd.cdi, "..", "cdi-hook.sh"), str(tmp_path / "cdi-hook.json")
    with open(script, "w") as f:
        f.write('#!/bin/sh\ncat > "$1"\n')
    os.chmod(script, 0o755)
    with open(os.path.join(hd.cdi, "vendor.json"), "w") as f:
        f.write(json.dumps(CDI_JSON).replace("HOST", host)
                .replace("SCRIPT", os.path.realpath(script)).replace("OUT", out))
    with open(os.path.join(hd.cdi, "nic.yaml"), "w") as f:
        f.write(CDI_YAML.replace("HOST", host))
    _prepare(hd, "hk9", 'devices = ["vendor.com/gpu=gpu0", "example.org/nic=all"]\n')
    try:
        r = _exec(hd, "hk9", "sh", "-c", 'echo "$VENDOR_SPEC $VENDOR_GPU $NIC"; '
                  'stat -c "%n %A" /dev/vgpu0 /dev/nic0; cat /opt/vendor/vendor.txt; '
                  'touch /opt/vendor/x')
        lines = r.stdout.splitlines()
        assert lines == ["1 0 0", "/dev/vgpu0 crw-------", "/dev/nic0 crw-rw----",
                         "vendor data"], r.stdout + r.stderr
        assert "Read-only" in r.stderr, r.stderr
        # the spec's hook ran as an OCI hook, with the state on stdin
        assert json.load(open(out))["id"] == "hk9"
    finally:
        _release(hd, "hk9")
    r = _prepare(hd, "hk10", 'devices = ["vendor.com/gpu=gpu7"]\n', check=False)
    assert r.returncode != 0
    assert "CDI device vendor.com/gpu=gpu7 is in no spec (searched " + hd.cdi in r.stderr
    assert "vendor.json" in r.stderr and "nic.yaml" in r.stderr, r.stderr
    r = _prepare(hd, "hk10", 'devices = ["/dev/gpu0"]\n', check=False)
    assert r.returncode != 0 and "device paths are not accepted" in r.stderr, r.stderr


def test_cdi_hostile_spec_left_out(hd):
    """A spec with a '..' path is refused whole: its device is unknown, and
    the error says why the spec was left out."""
    bad = {"cdiVersion": "0.6.0", "kind": "evil.com/x", "devices": [{"name": "a",
           "containerEdits": {"deviceNodes": [{"path": "/dev/../etc/shadow"}]}}]}
    path = os.path.join(hd.cdi, "evil.json")
    with open(path, "w") as f:
        json.dump(bad, f)
    try:
        r = _prepare(hd, "hk11", 'devices = ["evil.com/x=a"]\n', check=False)
        assert r.returncode != 0
        assert "is in no spec" in r.stderr and '".." in the path' in r.stderr, r.stderr
    finally:
        os.unlink(path)


def _hook(d, name, script, when, stages=("prestart",), timeout=None):
    path = os.path.join(d.oci, "..", f"{name}.sh")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + script)
    os.chmod(path, 0o755)
    hook = {"path": os.path.realpath(path), "args": [name, "arg1"], "env": ["HOOKVAR=v"]}
    if timeout:
        hook["timeout"] = timeout
    with open(os.path.join(d.oci, f"{name}.json"), "w") as f:
        json.dump({"version": "1.0.0", "hook": hook, "when": when, "stages": list(stages)}, f)


def test_oci_hook_gets_state(hd, tmp_path):
    out = os.path.join(str(tmp_path), "state.json")
    _hook(hd, "10-state", f'cat > {out}; echo "$1 $HOOKVAR" > {out}.args\n',
          {"annotations": {r"^com\.example\.hook$": "^state$"}})
    _prepare(hd, "hk12", '[annotations]\n"com.example.hook" = "state"\n')
    try:
        st = json.load(open(out))
        assert st["id"] == "hk12" and st["status"] == "created", st
        assert st["ociVersion"].startswith("1.0")
        assert st["annotations"]["com.example.hook"] == "state", st
        assert st["bundle"].endswith("/jobs/hk12"), st
        assert open(out + ".args").read() == "arg1 v\n"
    finally:
        _release(hd, "hk12")
    os.unlink(out)
    # not selected without the annotation
    _prepare(hd, "hk13", "")
    _release(hd, "hk13")
    assert not os.path.exists(out)


def test_oci_poststop_hook_runs_at_release(hd, tmp_path):
    out = os.path.join(str(tmp_path), "poststop.json")
    _hook(hd, "15-poststop", f"cat > {out}\n",
          {"annotations": {r"^com\.example\.hook$": "^poststop$"}}, stages=("poststop",))
    _prepare(hd, "hk15", '[annotations]\n"com.example.hook" = "poststop"\n')
    assert not os.path.exists(out)      # not at prepare
    _release(hd, "hk15")
    st = json.load(open(out))
    assert st["id"] == "hk15" and st["status"] == "stopped", st
    assert st["annotations"]["com.example.hook"] == "poststop", st


def test_oci_hook_timeout_and_failure(hd, tmp_path):
    _hook(hd, "20-slow", "sleep 60\n", {"annotations": {"^com\\.example\\.hook$": "^slow$"}},
          timeout=1)
    _hook(hd, "30-fail", "echo broken >&2; exit 3\n",
          {"annotations": {"^com\\.example\\.hook$": "^fail$"}})
    t0 = time.monotonic()
    r = _prepare(hd, "hk14", '[annotations]\n"com.example.hook" = "slow"\n', check=False)
    assert r.returncode != 0
    assert time.monotonic() - t0 < 15
    assert "20-slow.json" in r.stderr and "killed after its timeout of 1 s" in r.stderr, r.stderr
    r = _prepare(hd, "hk14", '[annotations]\n"com.example.hook" = "fail"\n', check=False)
    assert r.returncode != 0
    assert "30-fail.json" in r.stderr and "exit status 3: broken" in r.stderr, r.stderr
    # the failed prepares left nothing: the job prepares cleanly afterwards
    _prepare(hd, "hk14", "")
    _release(hd, "hk14")


def test_site_default_and_missing_host_parts(hostworld, daemon_factory, tmpdir_short):
    w = hostworld
    # EDFs are read with the job user's rights: beside the CDI directory
    cdi, oci = os.path.join(tmpdir_short, "cdi"), os.path.join(tmpdir_short, "oci")
    d = daemon_factory(config_text=_conf(w, cdi, oci, cxi_default="true"), subdir="default")
    d.alps("pull", "--quiet", w.ref, check=True)
    d.cdi, d.w = cdi, w
    os.makedirs(cdi)
    _prepare(d, "sd1", "")
    r = _exec(d, "sd1", "/opt/probe")
    assert r.stdout.splitlines()[0] == "fabric=host+host", r.stdout + r.stderr
    _release(d, "sd1")
    _prepare(d, "sd2", CXI_OFF)
    r = _exec(d, "sd2", "/opt/probe")
    assert r.stdout.splitlines()[0] == "fabric=image+image", r.stdout + r.stderr
    _release(d, "sd2")
    d.stop()
    d = daemon_factory(config_text=_conf(w, cdi, oci, libraries=[f"{w.host}/lib/nope.so.1"]),
                       subdir="missing-lib")
    d.alps("pull", "--quiet", w.ref, check=True)
    d.cdi, d.w = cdi, w
    r = _prepare(d, "sd3", CXI_ON, check=False)
    assert r.returncode != 0
    assert f"the cxi hook: the host library {w.host}/lib/nope.so.1 is missing" in r.stderr
    d.stop()
    d = daemon_factory(config_text=_conf(w, cdi, oci, devices=[f"{w.host}/dev/hsn*"]),
                       subdir="missing-dev")
    d.alps("pull", "--quiet", w.ref, check=True)
    d.cdi, d.w = cdi, w
    r = _prepare(d, "sd4", CXI_ON, check=False)
    assert r.returncode != 0
    assert f"no host device matches {w.host}/dev/hsn*" in r.stderr, r.stderr


def test_bundled_stack_warning(hd):
    hd.alps("pull", "--quiet", hd.w.bundled_ref, check=True)
    e = _edf(hd, "hk16.toml", CXI_ON)
    with open(e) as f:
        text = f.read().replace(hd.w.ref, hd.w.bundled_ref)
    with open(e, "w") as f:
        f.write(text)
    r = hd.alps("prepare", "--job", "hk16", "--user", str(NOBODY), "--environment", e)
    assert r.returncode == 0, r.stderr
    _release(hd, "hk16")
    assert "warning: the image ships its own network stack (label " \
           "com.alps.network-stack=bundled) and the CXI hook is on" in r.stderr, r.stderr
    # without the hook, or with the image that declares nothing: no warning
    e = _edf(hd, "hk17.toml", CXI_ON)
    r = hd.alps("prepare", "--job", "hk17", "--user", str(NOBODY), "--environment", e)
    _release(hd, "hk17")
    assert "network stack" not in r.stderr, r.stderr


def test_edf_check_warns_about_hook_combinations(hd):
    from conftest import binary
    e = _edf(hd, "chk.toml", '[annotations]\n"com.hooks.aws_ofi_nccl.enabled" = "true"\n'
             '"com.hooks.cxi.enabled" = "false"\n"com.hooks.ssh.port" = "22"\n')
    r = subprocess.run([binary("alps"), "edf", "check", e], capture_output=True, text=True)
    assert "the aws_ofi_nccl hook needs the CXI hook" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "ignored: the SSH hook is not on" in r.stdout + r.stderr


def test_attack_user_names_host_devices(hd):
    """An unprivileged user's `alps run` cannot reach a host node the site
    did not list: a /dev path is refused, and a CDI spec the user owns
    (a CDI directory others can write to) is left out, never applied."""
    e = _edf(hd, "atk1.toml", 'devices = ["/dev/mem"]\n')
    r = hd.alps("run", "--environment", e, "--", "cat", "/dev/mem", user=NOBODY)
    assert r.returncode != 0
    assert "device paths are not accepted" in r.stderr, r.stderr
    spec = {"cdiVersion": "0.6.0", "kind": "attacker.org/mem", "devices": [{"name": "m",
            "containerEdits": {"deviceNodes": [{"path": "/dev/mem"}],
                               "mounts": [{"hostPath": "/etc", "containerPath": "/hostetc"}]}}]}
    path = os.path.join(hd.cdi, "attacker.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    os.chown(path, NOBODY, NOBODY)
    try:
        e = _edf(hd, "atk2.toml", 'devices = ["attacker.org/mem=m"]\n')
        r = hd.alps("run", "--environment", e, "--", "sh", "-c",
                    "cat /dev/mem | head -c 1; cat /hostetc/shadow", user=NOBODY)
        assert r.returncode != 0
        assert "CDI device attacker.org/mem=m is in no spec" in r.stderr, r.stderr
        assert "not a regular file of root's that only root can write" in r.stderr, r.stderr
    finally:
        os.unlink(path)


def test_edf_check_warns_about_devices_and_nccl_variant(hd):
    """alps edf check, as a user: a device no CDI spec defines (naming the
    directories searched, hooks.cdi_dirs' default or --cdi-dir), and an NCCL
    plugin variant that does not match the CUDA/ROCm the cached image
    declares (--image)."""
    import pathlib
    from conftest import binary
    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="alps-chk-", dir="/tmp"))
    os.chmod(tmp_path, 0o755)
    try:
        _check_devices_and_variant(hd, tmp_path, binary)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _check_devices_and_variant(hd, tmp_path, binary):
    cdi = tmp_path / "cdi"
    cdi.mkdir()
    os.chmod(cdi, 0o755)
    spec = {"cdiVersion": "0.6.0", "kind": "check.org/gpu",
            "devices": [{"name": "0", "containerEdits": {"env": ["G=0"]}}]}
    (cdi / "check.json").write_text(json.dumps(spec))
    os.chmod(cdi / "check.json", 0o644)
    w = hd.w
    layout = rf.build_image(str(tmp_path), "cu", [{"etc/x": b"x\n"}],
                            config={"config.env": ["PATH=/bin", "CUDA_VERSION=12.4.1"]})
    rf.push(layout, "cu", w.registry.host, "test/cu", "v1")
    ref = f"{w.registry.host}/test/cu:v1"
    hd.alps("pull", "--quiet", ref, check=True)

    def check(text, *opts):
        p = tmp_path / "chk.toml"
        p.write_text(f'image = "{ref}"\n' + text)
        os.chmod(p, 0o644)
        r = subprocess.run([binary("alps"), "--socket", hd.socket, "edf", "check", "--json",
                            *opts, str(p)], capture_output=True, text=True, user=NOBODY)
        j = json.loads(r.stdout)
        assert j["ok"], r.stdout + r.stderr
        return "\n".join(j["warnings"])

    devs = 'devices = ["check.org/gpu=0", "check.org/gpu=9"]\n'
    out = check(devs, "--cdi-dir", str(cdi))
    assert "check.org/gpu=9 is in no spec" in out and str(cdi) in out, out
    assert "gpu=0" not in out, out
    out = check(devs)
    assert "searched /etc/cdi, /var/run/cdi" in out, out
    nccl = '[annotations]\n"com.hooks.aws_ofi_nccl.enabled" = "true"\n' \
           '"com.hooks.aws_ofi_nccl.variant" = "{}"\n'
    out = check(nccl.format("cuda13"), "--image")
    assert "the image has cuda 12.4.1 (env CUDA_VERSION)" in out, out
    out = check(nccl.format("rocm6"), "--image")
    assert "the image has cuda 12.4.1 (env CUDA_VERSION), not rocm" in out, out
    assert "aws_ofi_nccl.variant" not in check(nccl.format("cuda12"), "--image")


def test_jobs_show_what_hooks_did(hd):
    """alps jobs (text and --json, doc/json.md): each hook's name, result,
    duration and an OCI hook's last lines of output; a warned hook says so."""
    from test_json import check
    _hook(hd, "40-talk", 'for i in 1 2 3 4 5 6 7; do echo "line $i"; done\nprintf "\\033[1m"\n',
          {"annotations": {r"^com\.example\.hook$": "^talk$"}})
    hd.alps("pull", "--quiet", hd.w.bundled_ref, check=True)
    e = _edf(hd, "hk40.toml", '[annotations]\n"com.hooks.cxi.enabled" = "true"\n'
             '"com.example.hook" = "talk"\n')
    with open(e) as f:
        text = f.read().replace(hd.w.ref, hd.w.bundled_ref)
    with open(e, "w") as f:
        f.write(text)
    hd.alps("prepare", "--job", "hk40", "--user", str(NOBODY), "--environment", e, check=True)
    _prepare(hd, "hk41", "")
    try:
        j = json.loads(hd.alps("--json", "jobs", check=True).stdout)
        check(j, "jobs")
        jobs = {x["job"]: x for x in j["jobs"]}
        assert jobs["hk41"]["hooks"] == [], jobs["hk41"]
        h = {x["name"]: x for x in jobs["hk40"]["hooks"]}
        assert h["cxi"]["result"] == "warned" and "own network stack" in h["cxi"]["output"], h
        talk = h["oci " + os.path.join(hd.oci, "40-talk.json")]
        assert talk["result"] == "ok" and talk["duration_ms"] >= 0, talk
        assert talk["output"].splitlines() == ["line 4", "line 5", "line 6", "line 7",
                                               "\\x1b[1m"], talk
        text = hd.alps("jobs", check=True).stdout
        line = next(ln for ln in text.splitlines() if ln.startswith("hk40 "))
        assert "HOOKS" in text and line.endswith("cxi(warned) oci:40-talk.json"), text
    finally:
        _release(hd, "hk40")
        _release(hd, "hk41")
        os.unlink(os.path.join(hd.oci, "40-talk.json"))
