"""hosts.yaml while a daemon runs (issue 15), end to end: the real ``pegasus q -d``
against real sshd nodes; hosts added to and removed from its hosts.yaml.

Nothing waits with a fixed sleep: ``wait_for`` polls with a deadline.
"""
import signal

from helpers import read, wait_for
from test_queue_mode import (consumed, jobs_of, lc, logins, marker, setup,  # noqa: F401
                             spawn_pegasus, stop, write_atomic)


def _holding(marker, tag):
    """A job that records where it runs, then holds its sub-node until marker.go exists."""
    return "%s; while [ ! -e %s.go ]; do sleep 0.05; done" % (marker.cmd(tag), marker.path)


def _disconnects(cluster, alias):
    return read(cluster.log_path(cluster.host_index(alias))).count("Disconnected from")


def test_hosts_added_to_and_removed_from_a_running_daemons_hosts_file(lc, marker, tmp_path):
    setup(tmp_path, "- node-1\n", "")
    hosts = tmp_path / "hosts.yaml"
    logins_before = logins(lc, "node-1")
    proc = spawn_pegasus(tmp_path, ["q", "-d", "--ssh-config", lc.ssh_config])

    def said():
        return read(tmp_path / "pegasus.out") + read(tmp_path / "pegasus.err")

    try:
        wait_for(lambda: logins(lc, "node-1") > logins_before or proc.poll() is not None,
                 what="the daemon to connect")
        write_atomic(hosts, "- node-1\n- node-2\n")
        wait_for(lambda: "host node-2: connected; taking jobs" in said(),
                 what="node-2 to be added and connected")
        assert "hosts.yaml changed: 1 sub-node added ([node-2])" in said()

        # Two jobs that hold their sub-node: both run at once, so node-2 took one.
        write_atomic(tmp_path / "queue.yaml", "- %s\n- %s\n" % (
            _holding(marker, "a"), _holding(marker, "b")))
        wait_for(lambda: len(marker.records()) == 2, what="both jobs to start")
        assert sorted(node for _, node in marker.records()) == ["node-1", "node-2"]
        on_node_2 = [tag for tag, node in marker.records() if node == "node-2"]

        # node-2 removed while its job runs: the job finishes, node-2 takes nothing new.
        disconnects = _disconnects(lc, "node-2")
        write_atomic(hosts, "- node-1\n")
        wait_for(lambda: "1 sub-node removed ([node-2])" in said(),
                 what="node-2 to be removed")
        write_atomic(tmp_path / "queue.yaml", "- %s\n- %s\n" % (
            marker.cmd("c"), marker.cmd("d")))
        lc.ssh("node-1", "touch %s.go" % marker.path)
        wait_for(lambda: len(marker.records()) == 4, what="the jobs added to run")
        wait_for(lambda: _disconnects(lc, "node-2") > disconnects,
                 what="node-2's connection to close")
        assert proc.poll() is None, "the daemon exited:\n" + said()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        stop(proc)
    records = marker.records()
    assert [tag for tag, node in records if node == "node-2"] == on_node_2
    assert sorted(tag for tag, node in records if node == "node-1") == sorted(
        {"a", "b", "c", "d"} - set(on_node_2))
    assert [j["done"] for j in jobs_of(said())] == ["exit 0"] * 4
    assert len(consumed(tmp_path)[1]) == 4
    assert not (tmp_path / "interrupted.yaml").exists()
