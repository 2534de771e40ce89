"""Tests of the real-SSH test cluster itself, using the OpenSSH client.

They do not need the ``pegasus`` package.
"""
import os
import signal
import socket
import subprocess
import sys
from functools import partial

import pytest

import helpers

wait_for = partial(helpers.wait_for, timeout=15.0, interval=0.02)  # this file's defaults


def connection_refused(ip, port):
    try:
        with socket.create_connection((ip, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


@pytest.fixture
def local_cluster(cluster):
    if not getattr(cluster, "supports_faults", False):
        pytest.skip("external cluster: cannot inspect or kill its hosts")
    return cluster


def test_aliases_and_config(cluster):
    assert len(cluster.aliases) == 4
    assert cluster.aliases == ["node-%d" % i for i in range(1, 5)]
    assert os.path.isfile(cluster.ssh_config)
    text = open(cluster.ssh_config).read()
    for alias in cluster.aliases:
        assert "Host %s\n" % alias in text


def test_every_node_answers_as_test_user_with_sh(cluster):
    for alias in cluster.aliases:
        res = cluster.ssh(alias, 'id -un; echo "$0"; echo "$SHELL"')
        assert res.returncode == 0, (alias, res.stderr)
        user, argv0, shell = res.stdout.splitlines()
        if cluster.user:
            assert user == cluster.user
        assert argv0 in ("sh", "/bin/sh")
        assert shell == "/bin/sh"


def test_nodes_are_distinct_addresses(local_cluster):
    c = local_cluster
    from cluster import NET
    assert c.ips == ["127.0.%d.%d" % (NET, c.first_ip + i) for i in range(4)]
    seen = set()
    for alias, ip in zip(c.aliases, c.ips):
        res = c.ssh(alias, 'echo "$SSH_CONNECTION"')
        assert res.returncode == 0, res.stderr
        server_ip, server_port = res.stdout.split()[2:4]
        assert (server_ip, int(server_port)) == (ip, c.port)
        seen.add(server_ip)
    assert len(seen) == 4


def test_home_is_clean(cluster):
    res = cluster.ssh(cluster.aliases[0], "cd && ls -A")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [] or set(res.stdout.split()) <= {".ssh"}


def test_distinct_host_keys(local_cluster):
    keys = local_cluster.host_keys
    assert sorted(keys) == sorted(local_cluster.aliases)
    assert all(k.startswith("ssh-ed25519 ") for k in keys.values())
    assert len(set(keys.values())) == len(keys)


def test_known_hosts_learned_with_accept_new(local_cluster):
    c = local_cluster
    c.reset_known_hosts()
    try:
        for alias in c.aliases:
            res = c.ssh(alias, "true")
            assert res.returncode == 0, res.stderr
        lines = set(open(c.known_hosts).read().splitlines())
        for alias in c.aliases:
            assert c.known_hosts_line(alias) in lines
        assert len(lines) == len(c.aliases)
    finally:
        c.reset_known_hosts()


def test_wrong_known_host_key_is_refused(local_cluster):
    c = local_cluster
    a, b = c.aliases[:2]
    try:
        with open(c.known_hosts, "w") as f:
            # node-1's address with node-2's key
            f.write("[%s]:%d %s\n" % (c.address(a), c.port, c.host_keys[b]))
        res = c.ssh(a, "true")
        assert res.returncode == 255
        assert "HOST IDENTIFICATION HAS CHANGED" in res.stderr
        c.seed_known_hosts()
        assert c.ssh(a, "true").returncode == 0
    finally:
        c.reset_known_hosts()


def test_scratch_dir_is_writable_by_test_user(local_cluster):
    c = local_cluster
    path = os.path.join(c.scratch, "written-by-node-2")
    res = c.ssh("node-2", "echo hi > %s" % path)
    assert res.returncode == 0, res.stderr
    assert open(path).read() == "hi\n"
    os.unlink(path)


def test_kill_host_and_start_host(local_cluster):
    c = local_cluster
    ip = c.address("node-3")
    # a long-running command (daemonized, even) dies with its host
    res = c.ssh("node-3", "nohup sleep 600 >/dev/null 2>&1 & echo $!")
    assert res.returncode == 0, res.stderr
    pid = int(res.stdout.strip())
    assert c.ssh("node-1", "true").returncode == 0
    c.kill_host(2)
    try:
        assert not c.is_running(2)
        assert connection_refused(ip, c.port)
        res = c.ssh("node-3", "true", options=["-o", "ConnectTimeout=5"])
        assert res.returncode == 255
        assert "refused" in res.stderr.lower()
        wait_for(lambda: not _alive(pid), what="sleep on node-3 to die")
        # the other nodes are unaffected
        assert c.ssh("node-4", "true").returncode == 0
        c.kill_host(2)  # idempotent
    finally:
        c.start_host(2)
    assert c.is_running(2)
    res = c.ssh("node-3", "id -un")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == c.user


@pytest.mark.sshd
def test_stop_is_idempotent_and_kills_sessions(tmp_path_factory):
    # A second, private cluster on other addresses, so the session one is untouched.
    import shutil
    import tempfile

    from cluster import FIRST_IP, NET, OFFSET_PRIVATE, Cluster

    helpers.cluster_or_skip()
    workdir = tempfile.mkdtemp(prefix="pegasus-cluster-")
    try:
        with Cluster(workdir, n_hosts=2, first_ip=FIRST_IP + OFFSET_PRIVATE) as c:
            ips = ["127.0.%d.%d" % (NET, FIRST_IP + OFFSET_PRIVATE + i) for i in range(2)]
            assert c.ips == ips
            # the sleep escapes the sshd process tree (its parent sh exits)
            res = c.ssh("node-2", "setsid sh -c 'sleep 600 </dev/null >/dev/null 2>&1 & echo $!'")
            assert res.returncode == 0, res.stderr
            pid = int(res.stdout.strip())
            assert _alive(pid)
            port = c.port
        wait_for(lambda: not _alive(pid), what="daemonized sleep to die")
        for ip in ips:
            assert connection_refused(ip, port)
        c.stop()  # again: no error
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] != b"Z"


# ---------------------------------------------------------------- one process or several

class _Config:
    def __init__(self, markexpr):
        self.markexpr = markexpr

    def getoption(self, name):
        assert name == "markexpr"
        return self.markexpr


@pytest.mark.parametrize("markexpr", ["not sshd", "not sshd and not slow", "", "sshd",
                                      "slow", "not"])  # "not": a bad -m, pytest says so
def test_auto_gives_a_worker_more_than_cpus(markexpr):
    """``-n auto`` (addopts): tests mostly wait, so a worker more than CPUs, with or
    without the sshd tests (each worker starts a cluster of its own)."""
    import conftest

    assert conftest.pytest_xdist_auto_num_workers(_Config(markexpr)) == os.cpu_count() + 1


def test_each_worker_has_its_own_addresses_and_user():
    """The sshd tests of two xdist workers never share a node or a test user's home."""
    code = ("import cluster, os; print(cluster.FIRST_IP, cluster.TEST_USER, "
            "cluster.Cluster('/tmp/x').ips[0])")
    tests = os.path.dirname(os.path.abspath(__file__))

    def worker(name, base, net=None):
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTEST_XDIST_WORKER", "PEGASUS_TEST_FIRST_IP",
                            "PEGASUS_TEST_NET")}
        env.update({} if name is None else {"PYTEST_XDIST_WORKER": name})
        env.update({} if base is None else {"PEGASUS_TEST_FIRST_IP": base})
        env.update({} if net is None else {"PEGASUS_TEST_NET": net})
        return subprocess.run([sys.executable, "-c", code], cwd=tests, env=env,
                              capture_output=True, text=True, check=True).stdout.split()

    assert worker(None, None) == ["11", "pegasus-test", "127.0.0.11"]
    assert worker("gw0", None) == ["11", "pegasus-test", "127.0.0.11"]
    assert worker("gw2", None) == ["51", "pegasus-test-51", "127.0.0.51"]
    assert worker("gw1", "100") == ["120", "pegasus-test-120", "127.0.0.120"]
    assert worker("gw1", None, "3") == ["31", "pegasus-test-n3-31", "127.0.3.31"]
    assert worker(None, None, "3") == ["11", "pegasus-test-n3", "127.0.3.11"]


def test_ctrl_c_is_not_ignored_in_the_suite():
    """What the Ctrl-c tests need: SIGINT reaches the processes they start."""
    assert signal.getsignal(signal.SIGINT) != signal.SIG_IGN


def test_a_suite_started_with_ctrl_c_ignored_gives_it_back():
    """A script's ``pytest ... &`` ignores SIGINT; conftest.py gives it back."""
    def ignore_sigint():
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    here = os.path.dirname(os.path.abspath(__file__))
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                          os.path.join(here, "test_cluster.py") + "::"
                          "test_ctrl_c_is_not_ignored_in_the_suite"],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         preexec_fn=ignore_sigint, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_processes_tests_start_keep_bytecode_outside_the_tree():
    """conftest.py: a Pegasus the tests start loads its modules compiled once, from a
    cache folder outside the tree, even in a suite started under PYTHONDONTWRITEBYTECODE."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    show = ("import importlib.util, sys, pegasus.template as t; "
            "print(sys.dont_write_bytecode, importlib.util.cache_from_source(t.__file__))")
    res = subprocess.run([sys.executable, "-c", show], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=60, cwd=root)
    assert res.returncode == 0, res.stderr
    writes_none, cached = res.stdout.split()
    assert writes_none == "False"
    assert os.path.isfile(cached) and not cached.startswith(root + os.sep), cached
