"""pegasus.sshconfig: ssh_config resolution through ``ssh -G``.

Every test passes ``-F`` (a temporary ssh_config) and HOME points at a
temporary directory, so the user's real ~/.ssh/config is never read.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pegasus import sshconfig
from pegasus.errors import HostConfigError, HostError
from pegasus.sshconfig import parse_jump, resolve

PW_HOME = pwd.getpwuid(os.getuid()).pw_dir
LOCAL_USER = pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    sshconfig._resolve.cache_clear()
    yield
    sshconfig._resolve.cache_clear()


@pytest.fixture
def config(tmp_path):
    """Write an ssh_config; returns its path."""
    def write(text: str) -> str:
        path = tmp_path / "ssh_config"
        path.write_text(text.replace("{tmp}", str(tmp_path)))
        return str(path)
    return write


def test_full_host_block(config, tmp_path):
    (tmp_path / "id_10.0.0.1_bob_2222").write_text("k")
    (tmp_path / "id_plain").write_text("k")
    cfg = config("""
Host node-1
  HostName 10.0.0.1
  Port 2222
  User bob
  IdentityFile {tmp}/id_%h_%r_%p
  IdentityFile {tmp}/id_missing
  IdentityFile {tmp}/id_plain
  IdentitiesOnly yes
  UserKnownHostsFile {tmp}/kh1 {tmp}/kh2
  StrictHostKeyChecking yes
  HashKnownHosts yes
  HostKeyAlias Node-One
  ConnectTimeout 7
  ServerAliveInterval 15
""")
    t = resolve("node-1", cfg)
    assert (t.alias, t.hostname, t.port, t.user) == ("node-1", "10.0.0.1", 2222, "bob")
    assert t.identity_files == (f"{tmp_path}/id_10.0.0.1_bob_2222", f"{tmp_path}/id_plain")
    assert t.identities_only is True
    assert t.known_hosts_files[:2] == (f"{tmp_path}/kh1", f"{tmp_path}/kh2")
    assert "/etc/ssh/ssh_known_hosts" in t.known_hosts_files[2:]
    assert t.strict_host_key_checking == "yes"
    assert t.hash_known_hosts is True
    assert t.host_key_alias == "node-one"  # ssh lower-cases it
    assert t.connect_timeout == 7.0 and t.server_alive_interval == 15
    assert t.proxy_jump is None


def test_defaults(config):
    t = resolve("plain", config("Host other\n  Port 1\n"))
    assert (t.hostname, t.port, t.user) == ("plain", 22, LOCAL_USER)
    assert t.identities_only is False and t.hash_known_hosts is False
    assert t.strict_host_key_checking == "accept-new"  # OpenSSH's "ask"
    assert t.host_key_alias is None and t.proxy_jump is None
    assert t.connect_timeout is None and t.server_alive_interval is None
    # ssh expands ~ from the passwd database, not $HOME
    assert t.known_hosts_files[0] == f"{PW_HOME}/.ssh/known_hosts"


@pytest.mark.parametrize("value, policy", [
    ("yes", "yes"), ("no", "no"), ("off", "no"), ("ask", "accept-new"),
    ("accept-new", "accept-new")])
def test_strict_host_key_checking_normalised(config, value, policy):
    cfg = config(f"Host h\n  StrictHostKeyChecking {value}\n")
    assert resolve("h", cfg).strict_host_key_checking == policy


def test_identity_file_tilde_and_none(config, tmp_path):
    t = resolve("h", config("Host h\n  IdentityFile none\n"))
    assert t.identity_files == ()
    cfg = config("Host h\n  IdentityFile ~/.ssh/pegasus-test-no-such-key\n")
    assert resolve("h", cfg).identity_files == ()
    assert sshconfig._tilde("~/.ssh/id") == f"{PW_HOME}/.ssh/id"  # not $HOME
    assert sshconfig._tilde("~root/x") == f"{pwd.getpwnam('root').pw_dir}/x"


def test_identity_file_env_and_tokens(config, tmp_path, monkeypatch):
    monkeypatch.setenv("PEGASUS_KEYDIR", str(tmp_path))
    (tmp_path / f"key-h-{LOCAL_USER}-h").write_text("k")
    t = resolve("h", config("Host h\n  IdentityFile ${PEGASUS_KEYDIR}/key-%n-%u-%k\n"))
    assert t.identity_files == (f"{tmp_path}/key-h-{LOCAL_USER}-h",)


def test_user_known_hosts_none_records_nowhere(config):
    t = resolve("h", config("Host h\n  UserKnownHostsFile none\n"))
    assert t.known_hosts_files[0] == os.devnull


def test_known_hosts_tokens_expanded_by_ssh(config, tmp_path):
    cfg = config("Host h\n  HostName real\n  UserKnownHostsFile {tmp}/kh_%h_%p\n")
    assert resolve("h", cfg).known_hosts_files[0] == f"{tmp_path}/kh_real_22"


def test_single_proxy_jump_resolved(config):
    cfg = config("""
Host node-1
  ProxyJump alice@bastion:2200
Host bastion
  HostName 10.9.9.9
  User ignored
  Port 22
""")
    jump = resolve("node-1", cfg).proxy_jump
    assert (jump.alias, jump.hostname, jump.port, jump.user) == \
        ("bastion", "10.9.9.9", 2200, "alice")  # -J user@host:port wins
    assert jump.proxy_jump is None


def test_proxy_jump_alias_takes_bastion_config(config):
    cfg = config("Host n\n  ProxyJump gw\nHost gw\n  HostName 10.1.1.1\n"
                 "  User ops\n  Port 2022\n")
    jump = resolve("n", cfg).proxy_jump
    assert (jump.hostname, jump.port, jump.user) == ("10.1.1.1", 2022, "ops")


def test_proxy_jump_none_is_unset(config):
    cfg = config("Host h\n  ProxyJump none\n  ProxyCommand none\nHost *\n  ProxyJump gw\n")
    assert resolve("h", cfg).proxy_jump is None


@pytest.mark.parametrize("spec, parts", [
    ("gw", (None, "gw", None)),
    ("alice@gw", ("alice", "gw", None)),
    ("gw:2200", (None, "gw", 2200)),
    ("alice@gw:2200", ("alice", "gw", 2200)),
    ("a@b@gw:1", ("a@b", "gw", 1)),
    ("[::1]:2022", (None, "::1", 2022)),
    ("u@[fe80::1]", ("u", "fe80::1", None)),
    ("fe80::1", (None, "fe80::1", None)),
    ("ssh://u@gw:23", ("u", "gw", 23)),
])
def test_parse_jump(spec, parts):
    assert parse_jump(spec) == parts


@pytest.mark.parametrize("spec", ["gw:0", "gw:99999", "gw:x", "[::1", "@", "gw:"])
def test_parse_jump_refuses(spec):
    with pytest.raises(ValueError):
        parse_jump(spec)


def test_multi_hop_refused(config):
    cfg = config("Host node-1\n  ProxyJump a,b\n")
    with pytest.raises(HostConfigError) as err:
        resolve("node-1", cfg)
    assert str(err.value).startswith("host node-1: ProxyJump a,b")
    assert "one ProxyJump hop" in str(err.value)


def test_nested_jump_counts_as_multi_hop(config):
    cfg = config("Host node-1\n  ProxyJump gw\nHost gw\n  ProxyJump outer\n")
    with pytest.raises(HostConfigError) as err:
        resolve("node-1", cfg)
    assert "host node-1:" in str(err.value) and "outer" in str(err.value)


def test_proxy_command_refused(config):
    cfg = config("Host node-1\n  ProxyCommand nc %h %p\n")
    with pytest.raises(HostConfigError) as err:
        resolve("node-1", cfg)
    assert str(err.value) == (
        "host node-1: ProxyCommand is set in ssh_config; Pegasus cannot use "
        "ProxyCommand. Use a single ProxyJump instead, or remove it")


def test_bastion_with_proxy_command_refused(config):
    cfg = config("Host n\n  ProxyJump gw\nHost gw\n  ProxyCommand nc %h %p\n")
    with pytest.raises(HostConfigError) as err:
        resolve("n", cfg)
    assert str(err.value).startswith("host n: ProxyJump host gw: ProxyCommand")


def test_bad_config_file(config):
    cfg = config("Host h\n  NoSuchOption yes\n")
    with pytest.raises(HostError) as err:
        resolve("h", cfg)
    assert "host h:" in str(err.value)
    assert "Bad configuration option" in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(HostError) as err:
        resolve("h", str(tmp_path / "nope"))
    assert "nope" in str(err.value)


@pytest.mark.parametrize("alias", ["", "-oProxyCommand=touch x", " h"])
def test_bad_alias(config, alias):
    with pytest.raises(HostConfigError):
        resolve(alias, config(""))


def test_invalid_hostname_characters(config):
    with pytest.raises(HostError, match="invalid characters"):
        resolve("a;b", config(""))


def test_missing_ssh_binary(config, monkeypatch, tmp_path):
    cfg = config("")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(HostError, match="'ssh' is not installed"):
        resolve("h", cfg)


def test_cached_per_alias_and_file(config, monkeypatch):
    cfg = config("Host h\n  Port 2\n")
    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a) or real_run(*a, **k))
    assert resolve("h", cfg) is resolve("h", cfg)
    assert len(calls) == 1
    resolve("h", None)
    assert len(calls) == 2


def test_many_hosts_in_parallel_threads(config):
    cfg = config("".join(f"Host node-{i}\n  HostName 10.0.0.{i}\n" for i in range(60)))
    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        targets = list(pool.map(lambda i: resolve(f"node-{i}", cfg), range(60)))
    elapsed = time.perf_counter() - start
    assert [t.hostname for t in targets] == [f"10.0.0.{i}" for i in range(60)]
    assert elapsed < 10, elapsed  # a few ms each in practice
