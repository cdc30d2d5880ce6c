"""Site EDF presets (doc/edf.md): a directory of the site's EDFs searched
for bare names after the user's EDF_PATH, for `--environment` and for
`base_environment`, trusted only when it and its files are root's and
writable by no one else.  The client reads them with the user's rights, so
these tests run `alps edf check` as unprivileged users; test_pmix.py runs
a preset through srun."""
import json
import os
import shutil
import tempfile

import pytest

from conftest import binary

PRESET = ('[env]\nNCCL_SOCKET_IFNAME = "hsn0,hsn1"\nMIOPEN_USER_DB_PATH = "/tmp/miopen"\n'
          '[annotations]\n"com.hooks.cxi.enabled" = "true"\n')


@pytest.fixture
def site(users):
    """A site directory as an admin makes it: root's, 0755, files 0644."""
    d = tempfile.mkdtemp(prefix="alps-site-", dir="/tmp")
    os.chmod(d, 0o755)
    write(d, "lumi-ai.toml", PRESET)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write(d, name, text, owner=None, mode=0o644):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    if owner:
        os.chown(path, owner.uid, owner.gid)
    return path


def user_edf(user, name, text):
    d = os.path.join(user.home, ".edf")
    os.makedirs(d, exist_ok=True)
    os.chown(d, user.uid, user.gid)
    return write(d, name, text, owner=user)


def check(user, name, site_dir):
    r = user.run([binary("alps"), "edf", "check", "--json", name],
                 env={"ALPS_EDF_SITE_DIR": site_dir})
    return json.loads(r.stdout), r


def env_of(j):
    return {e["key"] if isinstance(e, dict) else e[0]: e["value"] if isinstance(e, dict) else e[1]
            for e in j["environment"]["env"]} if isinstance(j["environment"]["env"], list) \
        else j["environment"]["env"]


def test_preset_as_base_environment_and_by_name(users, site):
    v = users.victim
    user_edf(v, "train.toml", 'base_environment = "lumi-ai"\nimage = "r.io/a/b:1"\n'
             '[env]\nOWN = "yes"\n')
    j, r = check(v, "train", site)
    assert j["ok"], r.stdout + r.stderr
    env = env_of(j)
    assert env["NCCL_SOCKET_IFNAME"] == "hsn0,hsn1" and env["OWN"] == "yes", j
    assert "com.hooks.cxi.enabled" in json.dumps(j["environment"]), j
    # The preset itself by name, as --environment=lumi-ai would find it.
    j, r = check(v, "lumi-ai", site)
    assert j["ok"], r.stdout + r.stderr
    assert env_of(j)["MIOPEN_USER_DB_PATH"] == "/tmp/miopen"


def test_users_file_of_the_same_name_wins(users, site):
    v = users.victim
    user_edf(v, "lumi-ai.toml", '[env]\nNCCL_SOCKET_IFNAME = "mine"\n')
    user_edf(v, "train2.toml", 'base_environment = "lumi-ai"\n')
    try:
        j, r = check(v, "train2", site)
        assert j["ok"], r.stdout + r.stderr
        assert env_of(j)["NCCL_SOCKET_IFNAME"] == "mine"
    finally:
        os.unlink(os.path.join(v.home, ".edf", "lumi-ai.toml"))


def test_not_found_names_the_site_dir(users, site):
    j, r = check(users.victim, "nosuch", site)
    assert not j["ok"]
    assert os.path.join(site, "nosuch.toml") in json.dumps(j["errors"]), j


def test_attack_untrusted_site_dir_left_out(users, site):
    """An attacker who can write the site directory (one they made, or the
    site's left writable by others) or owns a file in it cannot slip a
    preset into the victim's job: every such preset is left out, with the
    reason, and the victim's EDF fails to load instead."""
    a, v = users.attacker, users.victim
    evil = '[env]\nLD_PRELOAD = "/tmp/evil.so"\n'
    user_edf(v, "job.toml", 'base_environment = "lumi-ai"\n')
    # A directory the attacker made, world-writable.
    made = tempfile.mkdtemp(prefix="alps-evil-", dir="/tmp")
    try:
        os.chown(made, a.uid, a.gid)
        r = a.run(["sh", "-c", f"chmod 777 {made} && printf '%s' '{evil}' > "
                   f"{made}/lumi-ai.toml && chmod 644 {made}/lumi-ai.toml"])
        assert r.returncode == 0, r.stderr
        j, r = check(v, "job", made)
        assert not j["ok"] and "LD_PRELOAD" not in r.stdout, r.stdout
        assert "left out: the directory" in json.dumps(j["errors"]), j
        assert "not owned by root" in json.dumps(j["errors"]), j
        # The site's own directory left writable by others.
        os.chmod(site, 0o777)
        r = a.run(["sh", "-c", f"rm -f {site}/lumi-ai.toml 2>/dev/null; printf '%s' '{evil}' "
                   f"> {site}/lumi-ai.toml"])
        j, r = check(v, "job", site)
        assert not j["ok"] and "LD_PRELOAD" not in r.stdout, r.stdout
        assert "writable by others than root" in json.dumps(j["errors"]), j
        # A root-owned 0755 directory holding the attacker's file or a link.
        os.chmod(site, 0o755)
        os.unlink(os.path.join(site, "lumi-ai.toml"))
        write(site, "lumi-ai.toml", evil, owner=a)
        j, r = check(v, "job", site)
        assert not j["ok"] and "not owned by root" in json.dumps(j["errors"]), j
        os.unlink(os.path.join(site, "lumi-ai.toml"))
        os.symlink(os.path.join(made, "lumi-ai.toml"), os.path.join(site, "lumi-ai.toml"))
        j, r = check(v, "job", site)
        assert not j["ok"] and "a symbolic link" in json.dumps(j["errors"]), j
    finally:
        shutil.rmtree(made, ignore_errors=True)
