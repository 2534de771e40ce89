"""Host selection and unreachable hosts (issue 15), on real sshd's: ``--limit``,
``--exclude``, failed-hosts.txt, unreachable-hosts.txt, ``--skip-unreachable``.

The skip tests stop sshd's, so they use a 4-node cluster of their own
(``own``, after the other clusters' addresses); the rest use the session
cluster. Which host ran a job is read from its output (``ran <hostname>``).
"""
import os
import re
import stat

import pytest

from cluster import OFFSET_SELECT, private_cluster
from helpers import queue_entries, read, setup, write

pytestmark = pytest.mark.sshd

HOSTS = "- node-1\n- node-2\n- node-3\n- node-4\n"
GHOST = HOSTS + "- ghost-host.invalid\n"  # contacting it fails the whole broadcast
RAN = "echo ran {{ hostname }}"


def ran_on(stdout):
    """The hosts that printed ``ran <host>``, sorted."""
    return sorted(set(re.findall(r"\] ran (\S+)$", stdout, re.M)))


def run(run_pegasus, cluster, folder, *args, queue=(RAN,), hosts=GHOST):
    setup(folder, hosts, list(queue))
    return run_pegasus(list(args) + ["--ssh-config", cluster.ssh_config], cwd=folder)


@pytest.mark.parametrize("args, hosts", [
    (["--limit", "node-[1-2]"], ["node-1", "node-2"]),
    (["--limit", "node-*", "--exclude", "node-3"], ["node-1", "node-2", "node-4"]),
    (["--limit", "node-[1,3-4]", "--exclude", "node-[4]"], ["node-1", "node-3"]),
    (["--limit", "node-2,node-4"], ["node-2", "node-4"]),
    (["--limit", "node-1", "--limit", "node-3"], ["node-1", "node-3"]),
])
def test_broadcast_runs_on_the_selected_hosts_only(cluster, run_pegasus, tmp_path, args,
                                                  hosts):
    res = run(run_pegasus, cluster, tmp_path, "b", *args)

    assert res.returncode == 0, res.stderr + res.stdout  # ghost-host was never contacted
    assert ran_on(res.stdout) == hosts


def test_queue_mode_takes_hosts_from_a_file(cluster, run_pegasus, tmp_path):
    write(tmp_path / "mine.txt", "# the two I may use\nnode-4\n\nnode-2  # this one too\n")
    res = run(run_pegasus, cluster, tmp_path, "q", "--limit", "@mine.txt",
              queue=[RAN + "; echo job %d" % i for i in range(6)])

    assert res.returncode == 0, res.stderr + res.stdout
    assert ran_on(res.stdout) == ["node-2", "node-4"]
    assert res.stdout.count("] job ") == 6


def test_a_pattern_that_selects_nothing_is_a_usage_error(cluster, run_pegasus, tmp_path):
    res = run(run_pegasus, cluster, tmp_path, "b", "--limit", "web-*", hosts=HOSTS)

    assert res.returncode == 2
    assert "--limit 'web-*' matches no host of hosts.yaml (its hosts: node-[1-4])" in res.stderr
    assert queue_entries(tmp_path / "queue.yaml") == [RAN]  # untouched
    assert not os.path.exists(tmp_path / "consumed.yaml")


def test_failed_hosts_are_listed_and_a_rerun_on_them_runs_there_only(cluster, run_pegasus,
                                                                    tmp_path):
    fails = "echo ran {{ hostname }}; case {{ hostname }} in node-2|node-4) exit 3;; esac"
    res = run(run_pegasus, cluster, tmp_path, "b", queue=[fails], hosts=HOSTS)

    assert res.returncode == 1, res.stderr + res.stdout
    listed = tmp_path / "failed-hosts.txt"
    assert read(listed) == "node-2\nnode-4\n"
    assert stat.S_IMODE(os.stat(listed).st_mode) == 0o600
    assert ("2 hosts failed (node-[2,4]): listed in failed-hosts.txt; to run on them only: "
            f"pegasus b --ssh-config {cluster.ssh_config} --limit @failed-hosts.txt") \
        in res.stdout
    assert not os.path.exists(tmp_path / "unreachable-hosts.txt")

    again = run(run_pegasus, cluster, tmp_path, "b", "--limit", "@failed-hosts.txt",
                hosts=HOSTS)

    assert again.returncode == 0, again.stderr + again.stdout
    assert ran_on(again.stdout) == ["node-2", "node-4"]
    assert not os.path.exists(listed)  # the last run had no failed host


@pytest.fixture(scope="module")
def own():
    """4 sshd nodes of this module's own, which its tests stop and start."""
    with private_cluster("select", 4, OFFSET_SELECT) as c:
        yield c


@pytest.fixture
def two_down(own):
    """node-2 and node-3 stopped; every node running again after the test."""
    own.kill_host(1)
    own.kill_host(2)
    yield own
    for i in range(own.n_hosts):
        own.start_host(i)


def test_broadcast_refuses_unreachable_hosts_and_lists_them(two_down, run_pegasus,
                                                            tmp_path):
    res = run(run_pegasus, two_down, tmp_path, "b", hosts=HOSTS)

    assert res.returncode == 3, res.stderr + res.stdout
    assert ran_on(res.stdout) == []
    assert queue_entries(tmp_path / "queue.yaml") == [RAN]
    assert read(tmp_path / "unreachable-hosts.txt") == "node-2\nnode-3\n"
    assert ("listed in unreachable-hosts.txt; to run without them: pegasus b --ssh-config "
            f"{two_down.ssh_config} --exclude @unreachable-hosts.txt (or --skip-unreachable)") \
        in res.stderr


def test_skip_unreachable_then_reach_them_once_back(two_down, run_pegasus, tmp_path):
    res = run(run_pegasus, two_down, tmp_path, "b", "--skip-unreachable",
              queue=[RAN, "echo second"], hosts=HOSTS)

    assert res.returncode == 1, res.stderr + res.stdout  # some hosts ran nothing
    assert ran_on(res.stdout) == ["node-1", "node-4"]
    assert "--skip-unreachable: skipping 2 hosts that cannot be reached:" in res.stdout
    assert "broadcasting to the other 2 hosts" in res.stdout
    assert "2 steps, all succeeded on every sub-node:" in res.stdout  # not failures
    assert ("2 hosts skipped, unreachable at start (--skip-unreachable): node-[2-3]"
            in res.stdout)
    assert read(tmp_path / "unreachable-hosts.txt") == "node-2\nnode-3\n"
    assert queue_entries(tmp_path / "queue.yaml") == []

    two_down.start_host(1)
    two_down.start_host(2)
    again = run(run_pegasus, two_down, tmp_path, "b", "--limit", "@unreachable-hosts.txt",
                hosts=HOSTS)

    assert again.returncode == 0, again.stderr + again.stdout
    assert ran_on(again.stdout) == ["node-2", "node-3"]
    assert not os.path.exists(tmp_path / "unreachable-hosts.txt")
