"""Security of the files Pegasus writes, and values inserted verbatim.

- Files Pegasus creates (consumed.yaml, the lock file ``.queue.yaml.lock``,
  known_hosts) respect the user's umask, and the rewritten queue.yaml keeps
  the mode the user gave it.
- A symlink planted where Pegasus writes (consumed.yaml, the lock file, the
  temporary ``.queue.yaml.partial``) is never followed: the file it points
  to stays as it was. A symlinked consumed.yaml or lock file is refused with a
  clean ``pegasus: ...`` message before anything is taken.
- Template values reach the shell verbatim (no HTML escaping).

Pegasus runs on ``localhost`` sub-nodes (no SSH), except in the known_hosts
tests, which need the local sshd test cluster; mostly through ``cli.main`` in
this process (``in_process``), but the created files' umask test, the
known_hosts tests and the issue's example run the real command (``pegasus``,
its umask set in the child before exec).
"""

import os
import stat
import subprocess
import sys

import pytest
import yaml

from helpers import run_in_process

UMASKS = [0o077, 0o022]


def write(path, text):
    with open(str(path), "w") as f:
        f.write(text)


def read_bytes(path):
    with open(str(path), "rb") as f:
        return f.read()


def mode_of(path):
    return stat.S_IMODE(os.lstat(str(path)).st_mode)


def pegasus(args, cwd, umask=None, timeout=60):
    """The real CLI, with the given umask set in the child before exec."""
    return subprocess.run(
        [sys.executable, "-m", "pegasus", *[str(a) for a in args]], cwd=str(cwd),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def in_process(args, cwd, umask=None, timeout=60):
    """``pegasus`` run by ``cli.main`` in this process, under ``umask``."""
    return run_in_process(args, cwd, timeout=timeout, umask=umask)


# ---------------------------------------------------------------- umask and modes

@pytest.mark.parametrize("umask", UMASKS, ids=["umask-077", "umask-022"])
def test_created_files_respect_the_umask(tmp_path, umask):
    write(tmp_path / "hosts.yaml", "- localhost\n")
    write(tmp_path / "queue.yaml", "- command: echo {{x}}\n  x: [1, 2]\n- echo tail\n")

    res = pegasus(["q"], tmp_path, umask=umask)

    assert res.returncode == 0, res.stdout + res.stderr
    want = 0o666 & ~umask
    for name in ("consumed.yaml", ".queue.yaml.lock"):
        assert mode_of(tmp_path / name) == want, \
            "%s is %o, want %o under umask %03o" % (name, mode_of(tmp_path / name), want, umask)


@pytest.mark.parametrize("original", [0o644, 0o664, 0o600, 0o640],
                         ids=["0644", "0664", "0600", "0640"])
@pytest.mark.parametrize("umask", UMASKS, ids=["umask-077", "umask-022"])
def test_rewritten_queue_keeps_its_mode(tmp_path, umask, original):
    write(tmp_path / "hosts.yaml", "- localhost\n")
    write(tmp_path / "queue.yaml", "# my queue\n- command: echo {{x}}\n  x: [1, 2]\n"
          "- echo tail\n")
    os.chmod(str(tmp_path / "queue.yaml"), original)
    inode = os.stat(str(tmp_path / "queue.yaml")).st_ino
    # Kept open, the old file keeps its inode in use: ext4 gives a freed one to a
    # later rewrite (1 run in 200), which then looked like no rewrite at all.
    with open(str(tmp_path / "queue.yaml"), "rb"):
        res = in_process(["q"], tmp_path, umask=umask)

    assert res.returncode == 0, res.stdout + res.stderr
    assert os.stat(str(tmp_path / "queue.yaml")).st_ino != inode, "the queue was not rewritten"
    assert read_bytes(tmp_path / "queue.yaml") == b"# my queue\n"
    assert mode_of(tmp_path / "queue.yaml") == original, (
        "queue.yaml was %o and is %o after a rewrite under umask %03o"
        % (original, mode_of(tmp_path / "queue.yaml"), umask))


# ---------------------------------------------------------------- known_hosts (needs sshd)

@pytest.fixture
def lc(cluster):
    if not getattr(cluster, "supports_faults", False):
        pytest.skip("needs the local sshd cluster (its addresses and client key)")
    return cluster


def _ssh_config(cluster, path, known_hosts):
    write(path, "Host node-1\n" + "".join("    %s %s\n" % kv for kv in [
        ("HostName", cluster.address("node-1")), ("Port", cluster.port),
        ("User", cluster.user), ("IdentityFile", cluster.identity_file),
        ("IdentitiesOnly", "yes"), ("UserKnownHostsFile", known_hosts),
        ("GlobalKnownHostsFile", "/dev/null"), ("StrictHostKeyChecking", "accept-new"),
        ("HashKnownHosts", "no"), ("BatchMode", "yes"), ("ConnectTimeout", 10)]))
    return str(path)


def _learned(known_hosts, cluster):
    want = cluster.host_keys["node-1"].split()
    host = "[%s]:%d" % (cluster.address("node-1"), cluster.port)
    with open(known_hosts) as f:
        return any(line.split()[:1] == [host] and line.split()[1:3] == want
                   for line in f if line.strip())


@pytest.mark.parametrize("umask", UMASKS, ids=["umask-077", "umask-022"])
def test_new_known_hosts_file_respects_the_umask(lc, tmp_path, umask):
    known = tmp_path / "dot-ssh" / "known_hosts"  # neither exists yet
    config = _ssh_config(lc, tmp_path / "ssh_config", str(known))
    write(tmp_path / "hosts.yaml", "- node-1\n")
    write(tmp_path / "queue.yaml", "- true\n")

    res = pegasus(["q", "--ssh-config", config], tmp_path, umask=umask, timeout=90)

    assert res.returncode == 0, res.stdout + res.stderr
    assert _learned(str(known), lc), "the host key was not recorded"
    file_mode, dir_mode = mode_of(known), mode_of(known.parent)
    assert file_mode & ~(0o666 & ~umask) == 0, \
        "known_hosts is %o: more than umask %03o allows" % (file_mode, umask)
    assert file_mode & 0o600 == 0o600, "known_hosts is %o: not rw for its owner" % file_mode
    assert dir_mode & ~(0o777 & ~umask) == 0, \
        "its folder is %o: more than umask %03o allows" % (dir_mode, umask)


def test_appending_to_known_hosts_keeps_its_mode(lc, tmp_path):
    known = tmp_path / "known_hosts"
    write(known, "# mine\n")
    os.chmod(str(known), 0o644)
    config = _ssh_config(lc, tmp_path / "ssh_config", str(known))
    write(tmp_path / "hosts.yaml", "- node-1\n")
    write(tmp_path / "queue.yaml", "- true\n")

    res = pegasus(["q", "--ssh-config", config], tmp_path, umask=0o077, timeout=90)

    assert res.returncode == 0, res.stdout + res.stderr
    assert _learned(str(known), lc)
    assert mode_of(known) == 0o644


# ---------------------------------------------------------------- planted symlinks

class Planted:
    """A work folder with a symlink planted at `name`, pointing outside it."""

    def __init__(self, tmp_path, name, dangling):
        self.work = tmp_path / "work"
        self.work.mkdir()
        (tmp_path / "outside").mkdir()
        self.victim = tmp_path / "outside" / "victim"
        if not dangling:
            write(self.victim, "precious\n")
            os.chmod(str(self.victim), 0o640)
        self.link = self.work / name
        os.symlink(str(self.victim), str(self.link))
        self.marker = self.work / "marker"
        write(self.work / "hosts.yaml", "- localhost\n")
        write(self.work / "queue.yaml", "- touch %s\n- echo second\n" % self.marker)
        self.queue_before = read_bytes(self.work / "queue.yaml")
        self.dangling = dangling

    def assert_victim_untouched(self, res):
        out = res.stdout + res.stderr
        if self.dangling:
            assert not os.path.lexists(str(self.victim)), \
                "the symlink was followed: its target was created\n" + out
        else:
            assert read_bytes(self.victim) == b"precious\n", \
                "the symlink was followed: its target was written\n" + out
            assert mode_of(self.victim) == 0o640, "the target's mode changed"

    def assert_refused_cleanly(self, res):
        out = res.stdout + res.stderr
        assert res.returncode != 0, "a planted symlink was accepted:\n" + out
        assert "Traceback" not in out, out
        assert res.stderr.startswith("pegasus: "), "no 'pegasus: ' message:\n" + out
        assert self.link.name in res.stderr, res.stderr
        assert not self.marker.exists(), "a job ran:\n" + out
        assert "=== run" not in res.stdout, out
        assert read_bytes(self.work / "queue.yaml") == self.queue_before, (
            "queue.yaml was changed although the run was refused: the entry "
            "taken is neither in the queue nor in consumed.yaml\n" + out)
        assert os.path.islink(str(self.link)), "the planted symlink was replaced"


DANGLING = [False, True]
DANGLING_IDS = ["to-a-file", "dangling"]


@pytest.mark.parametrize("dangling", DANGLING, ids=DANGLING_IDS)
def test_symlinked_consumed_yaml_is_refused_before_anything_is_taken(tmp_path, dangling):
    p = Planted(tmp_path, "consumed.yaml", dangling)

    res = in_process(["q"], p.work)

    p.assert_victim_untouched(res)
    p.assert_refused_cleanly(res)


@pytest.mark.parametrize("dangling", DANGLING, ids=DANGLING_IDS)
def test_symlinked_lock_file_is_refused_before_anything_is_taken(tmp_path, dangling):
    p = Planted(tmp_path, ".queue.yaml.lock", dangling)

    res = in_process(["q"], p.work)

    p.assert_victim_untouched(res)
    p.assert_refused_cleanly(res)


@pytest.mark.parametrize("dangling", DANGLING, ids=DANGLING_IDS)
def test_symlink_at_the_temporary_queue_file_is_not_followed(tmp_path, dangling):
    p = Planted(tmp_path, ".queue.yaml.partial", dangling)

    res = in_process(["q"], p.work)

    p.assert_victim_untouched(res)
    out = res.stdout + res.stderr
    assert "Traceback" not in out, out
    if res.returncode == 0:  # written safely beside the link: the run went on
        assert p.marker.exists(), out
        assert read_bytes(p.work / "queue.yaml") == b""
    else:  # or refused: then cleanly, and nothing taken
        p.assert_refused_cleanly(res)


# ---------------------------------------------------------------- values verbatim

VALUES = [
    "a&b <c> 'd' \"e\" $f `g`",
    "it's",
    "--flag=value",
    "{{y}}",
    "back\\slash \\n",
    "  two  spaces  ",
    "; touch injected",
    "caf\u00e9 \u2603",
    "&amp; &#x27; &lt;",
]


@pytest.mark.parametrize("value", VALUES)
def test_values_are_inserted_verbatim(tmp_path, value):
    write(tmp_path / "hosts.yaml", "- localhost\n")
    queue = yaml.safe_dump([{"command": "printf '%s\\n' {{shq x}}", "x": value}],
                           allow_unicode=True, width=1000)
    with open(str(tmp_path / "queue.yaml"), "w", encoding="utf-8") as f:
        f.write(queue)

    res = run_in_process(["q"], tmp_path, text=False)

    out = res.stdout.decode("utf-8")
    assert res.returncode == 0, out + res.stderr.decode("utf-8", "replace")
    lines = out.splitlines()
    assert "[localhost] " + value in lines, out
    assert not (tmp_path / "injected").exists()
    with open(str(tmp_path / "consumed.yaml"), encoding="utf-8") as f:
        assert yaml.safe_load(f) == [{"command": "printf '%s\\n' {{shq x}}", "x": value}]


def test_the_example_of_the_issue_prints_exactly_its_value(tmp_path):
    write(tmp_path / "hosts.yaml", "- localhost\n")
    write(tmp_path / "queue.yaml",
          "- command: printf '%s\\n' {{shq x}}\n"
          "  x: 'a&b <c> ''d'' \"e\" $f `g`'\n")

    res = pegasus(["q"], tmp_path)

    assert res.returncode == 0, res.stdout + res.stderr
    assert "[localhost] a&b <c> 'd' \"e\" $f `g`\n" in res.stdout, res.stdout


def test_values_without_shq_are_not_escaped_either(tmp_path):
    write(tmp_path / "hosts.yaml", "- localhost\n")
    write(tmp_path / "queue.yaml",
          "- command: printf '%s\\n' \"{{x}}\"\n"
          "  x: \"a=b <c> it's &d\"\n")

    res = in_process(["q"], tmp_path)

    assert res.returncode == 0, res.stdout + res.stderr
    assert "[localhost] a=b <c> it's &d\n" in res.stdout, res.stdout
    assert "=== run #1 'printf '%s\\n' \"a=b <c> it's &d\"' ===" in res.stdout, res.stdout
