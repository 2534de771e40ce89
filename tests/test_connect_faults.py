"""Hosts that cannot be reached, and what Pegasus says about them, on real sshd nodes.

Peers that are not sshd's are plain sockets of this test: a **silent peer**
accepts TCP connections and never sends a byte (a hung sshd, a firewall
that completes the TCP handshake); a **black hole** drops every SYN (its
listen queue is full), as an address nothing answers does. Each host that
is not an sshd gets a short ``ConnectTimeout`` in the test's ssh_config, so
its timeout comes within seconds. A job that must outlast those timeouts
waits for a flag file the test touches once it has seen what it waits for.

Messages are checked as the user reads them: never an exception class name
of parallel-ssh, ssh2-python or Python.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid

import pytest

from cluster import _proc_table
from helpers import Pegasus, jobs_of, read, setup, wait_for

SILENT_HOSTS = 12  # more than gevent's 10 shared threads


def class_names():
    """The exception class names of the libraries under Pegasus, and Python's."""
    import builtins

    import pssh.exceptions
    import ssh2.exceptions

    names = set()
    for module in (pssh.exceptions, ssh2.exceptions, builtins):
        names.update(name for name, value in vars(module).items()
                      if isinstance(value, type) and issubclass(value, BaseException))
    return names


def named_classes(text):
    """Exception class names said in ``text`` (CamelCase words that name one)."""
    words = set(re.findall(r"\b[A-Z][A-Za-z0-9]*[a-z][A-Z][A-Za-z0-9]*\b", text))
    return sorted(words & class_names() | {w for w in words if w.endswith(("Error",
                                                                         "Exception"))})


# ---------------------------------------------------------------- peers that are not sshd

class SilentPeer:
    """Accepts TCP connections on 127.0.0.1 and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:  # closed
                return

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


class BlackHole:
    """127.0.0.1:port, where SYNs are dropped: a listener whose queue is full."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fill = []
        for _ in range(3):
            conn = socket.socket()
            conn.setblocking(False)
            conn.connect_ex(("127.0.0.1", self.port))
            self.fill.append(conn)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            with pytest.raises(socket.timeout):  # the scenario itself: nothing answers
                probe.connect(("127.0.0.1", self.port))
        finally:
            probe.close()

    def close(self):
        for conn in self.fill + [self.sock]:
            conn.close()


@pytest.fixture
def silent_peer():
    peer = SilentPeer()
    yield peer
    peer.close()


@pytest.fixture
def black_hole():
    hole = BlackHole()
    yield hole
    hole.close()


def config_with(cluster, tmp_path, hosts):
    """The cluster's ssh_config plus ``hosts`` {alias: (port, ConnectTimeout)} on 127.0.0.1."""
    extra = "".join("\nHost %s\n  HostName 127.0.0.1\n  Port %d\n  ConnectTimeout %d\n"
                    % (alias, port, timeout) for alias, (port, timeout) in hosts.items())
    path = tmp_path / "ssh_config"
    path.write_text(read(cluster.ssh_config) + extra)
    return str(path)


def flag(cluster):
    return os.path.join(cluster.scratch, "flag-" + uuid.uuid4().hex)


def gated(path, then):
    """Shell: wait until the test creates ``path``, then ``then``."""
    return "while [ ! -e %s ]; do sleep 0.05; done; %s" % (path, then)


# ---------------------------------------------------------------- silent peers (item 1)

def test_many_silent_hosts_delay_no_one_and_are_each_reported(cluster, tmp_path, silent_peer):
    """12 hosts that accept TCP and never answer the SSH handshake, beside node-1:
    node-1's jobs run at once; once their connection timeout is over, each silent
    host is said to give no answer; the run ends when its queue is done."""
    names = ["silent-%d" % i for i in range(1, SILENT_HOSTS + 1)]
    config = config_with(cluster, tmp_path, {n: (silent_peer.port, 10) for n in names})
    gate = flag(cluster)
    setup(tmp_path, "".join("- %s\n" % h for h in ["node-1"] + names),
          ["echo one", gated(gate, "echo two")])
    peg = Pegasus(tmp_path, ["q", "--ssh-config", config])
    try:
        wait_for(peg.saw("[node-1] one"), what="node-1's first job")
        said_then = peg.out()
        for name in names:
            wait_for(peg.saw("host %s: " % name), timeout=60, what="%s to be reported" % name)
        open(gate, "w").close()
        status = peg.wait()
    finally:
        peg.stop()
    out = peg.out()
    assert status == 0, peg.said()
    assert "no answer" not in said_then, said_then  # node-1 ran before any timeout
    assert "pegasus: connecting: " in said_then
    for name in names:
        assert ("pegasus: host %s: cannot connect to 127.0.0.1:%d: no answer (timed out "
                "after 10 s); running on the other hosts and retrying this one in the "
                "background" % (name, silent_peer.port)) in out, out
    assert [j["done"] for j in jobs_of(out)] == ["exit 0", "exit 0"]
    assert "2 jobs, all succeeded" in out
    assert named_classes(peg.said()) == []


# ---------------------------------------------------------------- a black hole (item 3)

def test_a_black_holed_address_is_one_timeout_said_in_words(cluster, tmp_path, black_hole):
    """Connecting never completes: one attempt, cut at ConnectTimeout, reported as no
    answer and retried in the background, while node-1 runs the queue."""
    config = config_with(cluster, tmp_path, {"hole": (black_hole.port, 2)})
    gate = flag(cluster)
    setup(tmp_path, "- node-1\n- hole\n", ["echo one", gated(gate, "echo two")])
    peg = Pegasus(tmp_path, ["q", "--ssh-config", config])
    try:
        wait_for(peg.saw("host hole: "), timeout=60, what="the black hole to be reported")
        open(gate, "w").close()
        status = peg.wait()
    finally:
        peg.stop()
    said = peg.said()
    assert status == 0, said
    reports = [line for line in said.splitlines() if "host hole" in line]
    assert reports == ["pegasus: host hole: cannot connect to 127.0.0.1:%d: no answer (timed "
                       "out after 2 s); running on the other hosts and retrying this one in "
                       "the background" % black_hole.port], said
    assert named_classes(said) == []


# ---------------------------------------------------------------- messages in words (item 4)

def test_a_refused_login_is_said_in_words(cluster, tmp_path):
    key = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = tmp_path / "ssh_config"
    config.write_text(read(cluster.ssh_config).replace(
        "IdentityFile %s" % os.path.join(os.path.dirname(cluster.ssh_config), "client_key"),
        "IdentityFile %s" % key))
    setup(tmp_path, "- node-1\n", ["echo never"])
    peg = Pegasus(tmp_path, ["q", "--ssh-config", str(config)])
    try:
        status = peg.wait()
    finally:
        peg.stop()
    said = peg.said()
    assert status == 3, said
    user = re.search(r"^\s*User (\S+)", read(cluster.ssh_config), re.M).group(1)
    assert ("host node-1: authentication refused for user '%s': no key was accepted "
            "(tried %s)" % (user, key)) in said, said
    assert named_classes(said) == [] and "retr" not in said, said


def test_a_connection_the_host_closes_mid_job_is_said_in_words(cluster, tmp_path):
    """The sshd's serving a job die (not the node's listener): the job is lost, and the
    reason says how, not which exception the SSH library raised."""
    pid_file = flag(cluster)
    setup(tmp_path, "- node-1\n", ["echo $$ > %s.tmp && mv %s.tmp %s; echo started; sleep 300"
                                   % ((pid_file,) * 3)])
    peg = Pegasus(tmp_path, ["q", "--ssh-config", cluster.ssh_config])
    try:
        job = int(wait_for(lambda: read(pid_file).strip(), what="the job to start"))
        listener = cluster._procs[cluster.host_index("node-1")].pid
        for pid in _sshd_ancestors(job, listener):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended when its child (killed first) did
                pass
        status = peg.wait()
    finally:
        peg.stop()
    said = peg.said()
    assert status == 1, said
    done = [j["done"] for j in jobs_of(peg.out())]
    assert done in (["connection lost, outcome unknown (the host closed the connection)"],
                    ["connection lost, outcome unknown (the connection was reset or timed "
                     "out)"]), said
    assert named_classes(said) == [], said


def _sshd_ancestors(pid, listener):
    """The sshd processes between a session's process and the node's listener."""
    table, found = _proc_table(), []
    pid = table.get(pid)
    while pid and pid != listener and pid != 1:
        with open("/proc/%d/comm" % pid) as f:
            if f.read().startswith("sshd"):
                found.append(pid)
        pid = table.get(pid)
    assert pid == listener, "the job does not run under node-1's sshd"
    return found


# ---------------------------------------------------------------- keys from an agent

@pytest.fixture
def agent(tmp_path):
    """An ssh-agent of this test: (its socket, ssh-add for a key file)."""
    sock = str(tmp_path / "agent.sock")
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(sock), what="ssh-agent's socket")

        def add(key):
            subprocess.run(["ssh-add", "-q", str(key)], env=dict(os.environ, SSH_AUTH_SOCK=sock),
                           check=True, capture_output=True)
        yield sock, add
    finally:
        proc.kill()
        proc.wait()


def test_keys_from_an_agent_are_tried_in_turn(cluster, tmp_path, agent):
    """Without IdentitiesOnly, the agent's keys are offered one after the other: a
    refused one first, then the one the node accepts."""
    sock, add = agent
    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    add(wrong)
    key = os.path.join(os.path.dirname(cluster.ssh_config), "client_key")
    config = tmp_path / "ssh_config"
    config.write_text("\n".join(line for line in read(cluster.ssh_config).splitlines()
                                if "IdentityFile" not in line and "IdentitiesOnly" not in line))
    setup(tmp_path, "- node-1\n", ["echo via the agent"])
    refused = subprocess.run(_pegasus(config), cwd=str(tmp_path), capture_output=True, text=True,
                             env=dict(os.environ, SSH_AUTH_SOCK=sock), timeout=60)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "no key was accepted (tried the agent's keys)" in refused.stderr
    add(key)
    accepted = subprocess.run(_pegasus(config), cwd=str(tmp_path), capture_output=True,
                              text=True, env=dict(os.environ, SSH_AUTH_SOCK=sock), timeout=60)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "[node-1] via the agent" in accepted.stdout


def _pegasus(config):
    return [sys.executable, "-m", "pegasus", "q", "--ssh-config", str(config)]
