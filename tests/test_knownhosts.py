"""pegasus.knownhosts: known_hosts lookups and the accept-new policy.

Keys are real (ssh-keygen) and hashed files are made and read by ssh-keygen,
to prove the format is OpenSSH's.
"""

from __future__ import annotations

import base64
import multiprocessing
import os
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pegasus.errors import HostKeyError
from pegasus.knownhosts import check_host_key, key_type_of, known_key_types

from helpers import examples

POLICIES = ["yes", "accept-new", "no"]


class Key:
    def __init__(self, pub_line: str):
        self.type, self.b64 = pub_line.split()[:2]
        self.blob = base64.b64decode(self.b64)

    def entry(self, hosts: str, marker: str = "") -> str:
        return f"{marker + ' ' if marker else ''}{hosts} {self.type} {self.b64}"


def _keygen(directory: Path, name: str, kind: str) -> Key:
    path = directory / name
    bits = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *bits, "-N", "", "-C", name,
                    "-f", str(path)], check=True)
    return Key((directory / f"{name}.pub").read_text())


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return {name: _keygen(d, name, name.rstrip("12"))
            for name in ("ed255191", "ed255192", "ecdsa1", "ecdsa2", "rsa1")}


@pytest.fixture
def ed(keys):
    return keys["ed255191"]


@pytest.fixture
def ed2(keys):
    return keys["ed255192"]


@pytest.fixture
def kh(tmp_path):
    """Write known_hosts lines; returns the path as a str."""
    path = tmp_path / "ssh" / "known_hosts"

    def write(*lines: str) -> str:
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines))
        return str(path)
    write.path = str(path)
    return write


def check(host, port, key, files, policy="yes", **kw):
    return check_host_key(host, port, key.blob, files, policy, **kw)


def test_key_type_of(keys):
    assert key_type_of(keys["ed255191"].blob) == "ssh-ed25519"
    assert key_type_of(keys["ecdsa1"].blob) == "ecdsa-sha2-nistp256"
    assert key_type_of(keys["rsa1"].blob) == "ssh-rsa"
    for junk in (b"", b"\x00\x00", b"\x00\x00\x00\x09ssh", b"\xff\xff\xff\xffabc"):
        with pytest.raises(ValueError):
            key_type_of(junk)


def test_junk_blob_is_host_key_error(kh):
    with pytest.raises(HostKeyError, match="unreadable host key"):
        check_host_key("h", 22, b"junk", [kh()], "accept-new")


@pytest.mark.parametrize("name", ["ed255191", "ecdsa1", "rsa1"])
def test_plain_entry_known(keys, kh, name):
    key = keys[name]
    files = [kh("# a comment", "", "other " + key.entry("x")[2:], key.entry("a,Node-1,b"))]
    assert check("node-1", 22, key, files) == "known"
    assert check("NODE-1", 22, key, files) == "known"


def test_port_form(ed, kh):
    files = [kh(ed.entry("[127.0.0.11]:2222"))]
    assert check("127.0.0.11", 2222, ed, files) == "known"
    with pytest.raises(HostKeyError, match="not known"):
        check("127.0.0.11", 22, ed, files)
    plain = [kh(ed.entry("127.0.0.11"))]
    with pytest.raises(HostKeyError, match="not known"):
        check("127.0.0.11", 2222, ed, plain)


def test_hashed_by_ssh_keygen(ed, ed2, kh):
    path = kh(ed.entry("node-1"), ed.entry("[127.0.0.11]:2222"))
    subprocess.run(["ssh-keygen", "-H", "-f", path], check=True, capture_output=True)
    text = Path(path).read_text()
    assert text.count("|1|") == 2 and "node-1" not in text
    assert check("node-1", 22, ed, [path]) == "known"
    assert check("127.0.0.11", 2222, ed, [path]) == "known"
    with pytest.raises(HostKeyError, match="HAS CHANGED"):
        check("node-1", 22, ed2, [path], "no")
    with pytest.raises(HostKeyError, match="not known"):
        check("node-2", 22, ed, [path])


@pytest.mark.parametrize("host, port, lookup", [
    ("node-1", 22, "node-1"), ("127.0.0.11", 2222, "[127.0.0.11]:2222")])
@pytest.mark.parametrize("hashed", [True, False])
def test_written_lines_understood_by_ssh_keygen(ed, kh, host, port, lookup, hashed):
    path = kh.path
    assert check(host, port, ed, [path], "accept-new", hash_new=hashed) == "learned"
    line = Path(path).read_text()
    assert line.startswith("|1|") == hashed and line.endswith(f"{ed.b64}\n")
    found = subprocess.run(["ssh-keygen", "-F", lookup, "-f", path],
                           capture_output=True, text=True)
    assert found.returncode == 0 and ed.b64 in found.stdout
    assert check(host, port, ed, [path]) == "known"


def test_wildcards(ed, kh):
    files = [kh(ed.entry("*.example.com"), ed.entry("node-?"), ed.entry("[10.0.0.*]:22?2"))]
    assert check("a.example.com", 22, ed, files) == "known"
    assert check("node-7", 22, ed, files) == "known"
    assert check("10.0.0.5", 2202, ed, files) == "known"
    for host in ("example.com", "node-10"):
        with pytest.raises(HostKeyError, match="not known"):
            check(host, 22, ed, files)


def test_negation_means_line_does_not_apply(ed, ed2, kh):
    files = [kh(ed.entry("*.example.com,!bad.example.com"))]
    assert check("good.example.com", 22, ed, files) == "known"
    # the line does not apply to bad: its different key is unknown, not changed
    with pytest.raises(HostKeyError, match="not known"):
        check("bad.example.com", 22, ed2, files)
    assert known_key_types("bad.example.com", 22, files) == []


def test_revoked_refused_under_every_policy(ed, kh):
    files = [kh(ed.entry("node-1"), ed.entry("*", "@revoked"))]
    for policy in POLICIES:
        with pytest.raises(HostKeyError, match="@revoked") as err:
            check("node-1", 22, ed, files, policy)
        assert f"{files[0]}:2" in str(err.value)


def test_cert_authority_lines_ignored(ed, ed2, kh):
    files = [kh(ed2.entry("*", "@cert-authority"))]
    assert known_key_types("node-1", 22, files) == []
    assert check("node-1", 22, ed, files, "accept-new") == "learned"
    assert check("node-1", 22, ed, files) == "known"


@pytest.mark.parametrize("policy", POLICIES)
def test_changed_key_refused_with_the_fix(ed, ed2, kh, policy):
    path = kh("# header", ed.entry("[127.0.0.11]:2222"))
    before = Path(path).read_text()
    with pytest.raises(HostKeyError) as err:
        check("127.0.0.11", 2222, ed2, [path], policy, alias_for_messages="node-1")
    words = str(err.value)
    assert words.startswith("host node-1: REMOTE HOST KEY HAS CHANGED")
    assert "man-in-the-middle" in words and f"{path}:2" in words
    assert f"ssh-keygen -R '[127.0.0.11]:2222' -f {path}" in words
    assert err.value.host == "node-1"
    assert Path(path).read_text() == before


def test_known_wins_over_a_stale_line_of_the_same_type(ed, ed2, kh):
    files = [kh(ed2.entry("node-1"), ed.entry("node-1"))]
    assert check("node-1", 22, ed, files) == "known"


def test_unknown_refused_under_yes(ed, tmp_path):
    path = str(tmp_path / "nodir" / "known_hosts")
    with pytest.raises(HostKeyError) as err:
        check("node-1", 2222, ed, [path], "yes")
    words = str(err.value)
    assert "not known and StrictHostKeyChecking is yes" in words
    assert "ssh-keyscan -p 2222 node-1" in words and "SHA256:" in words
    assert not os.path.exists(path)


@pytest.mark.parametrize("policy", ["accept-new", "no"])
def test_unknown_learned_then_known(ed, ed2, tmp_path, policy):
    path = tmp_path / "new" / ".ssh" / "known_hosts"
    old = os.umask(0o022)
    try:
        assert check("Node-1", 2222, ed, [str(path)], policy) == "learned"
    finally:
        os.umask(old)
    assert path.read_text() == f"[node-1]:2222 {ed.type} {ed.b64}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert check("node-1", 2222, ed, [str(path)], "yes") == "known"
    with pytest.raises(HostKeyError, match="CHANGED"):
        check("node-1", 2222, ed2, [str(path)], policy)


def test_different_type_is_not_a_mismatch(keys, kh):
    ed, rsa, ecdsa = keys["ed255191"], keys["rsa1"], keys["ecdsa1"]
    files = [kh(rsa.entry("node-1"))]
    with pytest.raises(HostKeyError, match="not known"):
        check("node-1", 22, ed, files, "yes")
    assert check("node-1", 22, ed, files, "accept-new") == "learned"
    assert check("node-1", 22, ecdsa, files, "accept-new") == "learned"
    assert known_key_types("node-1", 22, files) == ["ssh-rsa", "ssh-ed25519",
                                                    "ecdsa-sha2-nistp256"]


@pytest.mark.parametrize("policy", POLICIES)
def test_other_type_is_change_opt_in(keys, kh, policy):
    """OpenSSH's rule, for callers that prefer the recorded types in kex."""
    ed, rsa = keys["ed255191"], keys["rsa1"]
    files = [kh(rsa.entry("[node-1]:2222"))]
    with pytest.raises(HostKeyError, match="HAS CHANGED") as err:
        check("node-1", 2222, ed, files, policy, other_type_is_change=True)
    assert "ssh-rsa key recorded" in str(err.value) and f"{files[0]}:1" in str(err.value)
    assert check("node-2", 2222, ed, files, "accept-new", other_type_is_change=True) \
        == "learned"  # nothing recorded for node-2: unknown, as before


def test_learned_into_first_file_only_known_from_any(ed, ed2, tmp_path):
    user, system = tmp_path / "user", tmp_path / "system"
    system.write_text(ed2.entry("node-2") + "\n")
    files = [str(user), str(tmp_path / "missing"), str(tmp_path), str(system)]
    assert check("node-2", 22, ed2, files) == "known"
    assert check("node-1", 22, ed, files, "accept-new") == "learned"
    assert user.read_text().startswith("node-1 ") and "node-1" not in system.read_text()


def test_appends_after_a_line_without_newline(ed, ed2, kh):
    path = kh()
    Path(path).write_text(ed2.entry("other"))  # no final newline
    check("node-1", 22, ed, [path], "accept-new")
    assert Path(path).read_text().splitlines() == [ed2.entry("other"), ed.entry("node-1")]


def test_symlinked_known_hosts_is_followed(ed, tmp_path):
    real = tmp_path / "dotfiles" / "known_hosts"
    real.parent.mkdir()
    real.write_text("")
    link = tmp_path / "known_hosts"
    link.symlink_to(real)
    assert check("node-1", 22, ed, [str(link)], "accept-new") == "learned"
    assert link.is_symlink() and ed.b64 in real.read_text()


def test_dev_null_records_nothing(ed, tmp_path):
    link = tmp_path / "known_hosts"
    link.symlink_to(os.devnull)
    for files in ([os.devnull], [str(link)], []):
        assert check("node-1", 22, ed, files, "accept-new") == "learned"


def test_fifo_is_refused_not_hung(ed, tmp_path):
    fifo = tmp_path / "known_hosts"
    os.mkfifo(fifo)
    with pytest.raises(HostKeyError, match="cannot record"):
        check("node-1", 22, ed, [str(fifo)], "accept-new")
    assert check("node-1", 22, ed, [str(fifo)], "no") == "learned"


def test_unwritable_directory(ed, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes everywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(HostKeyError, match="cannot record"):
        check("node-1", 22, ed, [str(locked / "known_hosts")], "accept-new")


def test_unrecordable_host_name(ed, tmp_path):
    with pytest.raises(HostKeyError, match="cannot record"):
        check("a b", 22, ed, [str(tmp_path / "kh")], "accept-new")


def test_concurrent_threads_record_once(ed, kh):
    path = kh()
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        check("node-1", 22, ed, [path], "accept-new"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["known"] * 7 + ["learned"]
    assert Path(path).read_text() == ed.entry("node-1") + "\n"


def _learn_many(path: str, b64: str, worker: int) -> None:
    blob = base64.b64decode(b64)
    for i in range(25):
        check_host_key(f"w{worker}-{i}", 22, blob, [path], "accept-new", hash_new=True)


def test_concurrent_processes_do_not_interleave(ed, kh):
    path = kh()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_learn_many, args=(path, ed.b64, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    lines = Path(path).read_text().splitlines()
    assert len(lines) == 100
    assert all(line.startswith("|1|") and line.endswith(ed.b64) for line in lines)
    assert check("w3-24", 22, ed, [path]) == "known"


_tokens = st.sampled_from([
    "node-1", "*", "!node-1", "[node-1]:2222", "|1|", "|1|AAAA|BBBB", "@revoked",
    "@cert-authority", "@bogus", "ssh-ed25519", "ssh-rsa", "#", ",", "AAAA", "\t",
    "AAAAC3NzaC1lZDI1NTE5AAAAIA==", "|1|" + "A" * 28 + "|" + "B" * 28, "|1|" + "A" * 28 + "|\u00e9", "\r", "\x00",
    "\u00e9", "*,!x"])
_lines = st.lists(st.one_of(_tokens, st.text(max_size=12)), max_size=6).map(" ".join)
_files = st.one_of(st.binary(max_size=300),
                   st.lists(_lines, max_size=6).map(lambda ls: "\n".join(ls).encode(
                       "utf-8", "surrogatepass")))


@settings(max_examples=examples(150), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=_files, policy=st.sampled_from(POLICIES), port=st.sampled_from([22, 2222]))
def test_garbage_never_raises_anything_else(keys, content, policy, port):
    key = keys["ed255191"]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "known_hosts")
        with open(path, "wb") as f:
            f.write(content)
        for host in ("node-1", "x"):
            try:
                assert check_host_key(host, port, key.blob, [path], policy) in (
                    "known", "learned")
            except HostKeyError:
                pass
            assert isinstance(known_key_types(host, port, [path]), list)


def test_a_fan_out_reads_the_file_once_and_a_change_again(ed, ed2, kh, monkeypatch):
    """64 hosts checked against one known_hosts file: parsed once, not 64 times
    (0.3 s of a 64-host broadcast); a line appended is seen at the next check."""
    from pegasus import knownhosts
    path = kh(*(ed.entry("node-%d" % i) for i in range(64)))
    past = os.stat(path).st_mtime - 10
    os.utime(path, (past, past))
    parsed = []
    real = knownhosts._parse_line
    monkeypatch.setattr(knownhosts, "_parse_line",
                        lambda *args: parsed.append(args) or real(*args))
    for i in range(64):
        assert check("node-%d" % i, 22, ed, [path]) == "known"
    assert len(parsed) == 65  # 64 lines and the empty one after the last newline
    with pytest.raises(HostKeyError, match="not known"):
        check("node-64", 22, ed2, [path])
    with open(path, "a") as f:
        f.write(ed2.entry("node-64") + "\n")
    os.utime(path, (past, past))
    assert check("node-64", 22, ed2, [path]) == "known"
