"""Fan-out against a stock sshd: 128 sub-nodes under its default ``MaxStartups``.

sshd (``MaxStartups 10:30:100``, as in tests/sshd_config) starts dropping new
connections once 10 are unauthenticated at once. A user who lists 128
sub-nodes of one host (or of a few) expects them all to connect and run, with
nothing in sshd's log about dropped connections: Pegasus opens at most 8 at a
time per host (connecting.CONNECTS_PER_HOST).
"""

import re

DROPPED = "past MaxStartups"


def drops(cluster, alias):
    with open(cluster.log_path(cluster.host_index(alias))) as f:
        return f.read().count(DROPPED)


def test_128_sub_nodes_of_one_host_broadcast_without_a_dropped_connection(
        cluster, run_pegasus, tmp_path):
    hosts = "- hostname: %s\n  i: [%s]\n" % (cluster.aliases[0],
                                             ", ".join(str(i) for i in range(128)))
    every_one_without_a_drop(cluster, run_pegasus, tmp_path, "b", hosts,
                             ["echo lane-{{i}}"], "lane", 128, "all 128 sub-nodes succeeded")


def test_128_sub_nodes_on_four_hosts_run_every_job_once(cluster, run_pegasus, tmp_path):
    hosts = "- hostname: [%s]\n  i: [%s]\n" % (", ".join(cluster.aliases[:4]),
                                               ", ".join(str(i) for i in range(32)))
    every_one_without_a_drop(cluster, run_pegasus, tmp_path, "q", hosts,
                             ["echo job-%d" % j for j in range(256)], "job", 256,
                             "256 jobs, all succeeded")


def every_one_without_a_drop(cluster, run_pegasus, tmp_path, mode, hosts, queue, word,
                             count, summary):
    """Run ``pegasus MODE``: ``word-0`` .. ``word-<count-1>`` printed once each, the
    ``summary``, no connection error, and no sshd logged a dropped connection."""
    before = {alias: drops(cluster, alias) for alias in cluster.aliases}
    (tmp_path / "hosts.yaml").write_text(hosts)
    (tmp_path / "queue.yaml").write_text("".join("- %s\n" % c for c in queue))
    res = run_pegasus([mode, "-p", "1", "--ssh-config", cluster.ssh_config], cwd=tmp_path,
                      timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    assert summary in res.stdout
    said = sorted(int(n) for n in re.findall(r"\] %s-(\d+)$" % word, res.stdout, re.M))
    assert said == list(range(count))
    assert "cannot connect" not in res.stdout + res.stderr
    assert {alias: drops(cluster, alias) for alias in cluster.aliases} == before
