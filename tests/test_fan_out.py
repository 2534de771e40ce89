"""Fan-out against a stock sshd: 128 sub-nodes under its default ``MaxStartups``.

sshd (``MaxStartups 10:30:100``, as in tests/sshd_config) starts dropping new
connections once 10 are unauthenticated at once. A user who lists 128
sub-nodes of one host (or of a few) expects them all to connect and run, with
nothing in sshd's log about dropped connections: Pegasus opens at most 8 at a
time per host (connecting.CONNECTS_PER_HOST).
"""

import re

import pytest

DROPPED = "past MaxStartups"


def drops(cluster, alias):
    with open(cluster.log_path(cluster.host_index(alias))) as f:
        return f.read().count(DROPPED)


def test_128_sub_nodes_of_one_host_broadcast_without_a_dropped_connection(
        cluster, run_pegasus, tmp_path):
    alias = cluster.aliases[0]
    before = drops(cluster, alias)
    (tmp_path / "hosts.yaml").write_text(
        "- hostname: %s\n  i: [%s]\n" % (alias, ", ".join(str(i) for i in range(128))))
    (tmp_path / "queue.yaml").write_text("- echo lane-{{i}}\n")
    res = run_pegasus(["b", "-p", "1", "--ssh-config", cluster.ssh_config], cwd=tmp_path,
                      timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    assert "all 128 sub-nodes succeeded" in res.stdout
    said = sorted(int(n) for n in re.findall(r"\] lane-(\d+)$", res.stdout, re.M))
    assert said == list(range(128))
    assert "cannot connect" not in res.stdout + res.stderr
    assert drops(cluster, alias) == before


def test_128_sub_nodes_on_four_hosts_run_every_job_once(cluster, run_pegasus, tmp_path):
    before = {alias: drops(cluster, alias) for alias in cluster.aliases}
    (tmp_path / "hosts.yaml").write_text(
        "- hostname: [%s]\n  i: [%s]\n" % (", ".join(cluster.aliases[:4]),
                                          ", ".join(str(i) for i in range(32))))
    (tmp_path / "queue.yaml").write_text("".join("- echo job-%d\n" % j for j in range(256)))
    res = run_pegasus(["q", "-p", "1", "--ssh-config", cluster.ssh_config], cwd=tmp_path,
                      timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    assert "256 jobs, all succeeded" in res.stdout
    said = sorted(int(n) for n in re.findall(r"\] job-(\d+)$", res.stdout, re.M))
    assert said == list(range(256))
    assert "cannot connect" not in res.stdout + res.stderr
    assert {alias: drops(cluster, alias) for alias in cluster.aliases} == before
