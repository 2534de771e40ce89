"""When jobs fail (issue 13), with the real ``pegasus`` against real sshd nodes:
timeouts stop remote jobs, the halt policy stops taking, failed.yaml keeps them.

Each test's sleeps carry a unique length (``sleep 1000.<n>``), so
``pgrep -f`` finds exactly its jobs on a node; the pattern is written
``[s]leep`` so the search never finds itself. Nothing waits with a fixed
sleep: conditions are polled with a deadline.
"""
import random

import yaml

from helpers import jobs_of, queue_entries, wait_for, write

GONE_WITHIN = 30.0  # seconds: the polling deadline for stopped jobs to disappear


def unique_sleep():
    """``sleep 1000.<n>``: a long sleep that no other test's pgrep finds."""
    return "sleep 1000.%06d" % random.randrange(10 ** 6)


def running(cluster, alias, sleep):
    """The pids of ``sleep`` on ``alias``."""
    pattern = "[s]" + sleep[1:]
    res = cluster.ssh(alias, "pgrep -f '%s'; true" % pattern)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def gone(cluster, alias, sleep):
    wait_for(lambda: not running(cluster, alias, sleep), timeout=GONE_WITHIN, interval=0.1,
             what="'%s' to be gone from %s" % (sleep, alias))


def write_run(folder, aliases, entries):
    write(str(folder / "hosts.yaml"), "".join("- %s\n" % a for a in aliases))
    write(str(folder / "queue.yaml"), yaml.safe_dump(entries, sort_keys=False))


# ---------------------------------------------------------------- timeouts

def test_a_remote_job_past_its_timeout_is_stopped_and_gone(cluster, run_pegasus, tmp_path):
    """`timeout: 1` on `sleep`, and on a `sleep` deaf to TERM (KILLed 3 s later)."""
    a, b = cluster.aliases[:2]
    plain, deaf = unique_sleep(), unique_sleep()
    write_run(tmp_path, [a, b], [{"command": plain, "timeout": "1"},
                                 {"command": "trap '' TERM; " + deaf, "timeout": "1"}])
    try:
        res = run_pegasus(["q", "--ssh-config", cluster.ssh_config], tmp_path)
        done = {job["command"]: job["done"] for job in jobs_of(res.stdout)}
        assert done == {plain: "timed out after 1s, exit 124",
                        "trap '' TERM; " + deaf: "timed out after 1s, exit 124"}, res.stdout
        assert "2 jobs, 2 failed:" in res.stdout
        assert res.returncode == 1, res.stdout + res.stderr
        gone(cluster, a, plain)
        gone(cluster, b, deaf)
    finally:
        for alias, sleep in ((a, plain), (b, deaf)):
            cluster.ssh(alias, "pkill -9 -f '[s]%s'; true" % sleep[1:])
    consumed = yaml.safe_load((tmp_path / "consumed.yaml").read_text())
    assert consumed == [{"command": plain, "timeout": "1"},
                        {"command": "trap '' TERM; " + deaf, "timeout": "1"}]
    assert queue_entries(tmp_path / "queue.yaml") == []


# ---------------------------------------------------------------- the halt policy

def test_halt_soon_takes_at_most_n_plus_running_and_leaves_the_rest(cluster, run_pegasus,
                                                                     tmp_path):
    aliases = cluster.aliases[:2]
    write(str(tmp_path / "hosts.yaml"), "".join("- %s\n" % a for a in aliases))
    lines = ["- echo job-%d; exit 1\n" % i for i in range(20)]
    write(str(tmp_path / "queue.yaml"), "".join(lines))

    res = run_pegasus(["q", "--ssh-config", cluster.ssh_config, "--halt", "soon,fail=3"],
                      tmp_path)

    taken = len(yaml.safe_load((tmp_path / "consumed.yaml").read_text()))
    assert 3 <= taken <= 3 + 2, res.stdout
    assert (tmp_path / "queue.yaml").read_text() == "".join(lines[taken:])
    assert "halted: --halt soon,fail=3: " in res.stdout
    assert res.returncode == 1, res.stdout + res.stderr


def test_halt_now_terminates_a_job_running_elsewhere(cluster, run_pegasus, tmp_path):
    a, b = cluster.aliases[:2]
    sleep = unique_sleep()
    write_run(tmp_path, [a, b], [sleep, "exit 1", "echo never"])
    try:
        res = run_pegasus(["q", "--ssh-config", cluster.ssh_config, "--halt", "now,fail=1"],
                          tmp_path)
        done = {job["command"]: job["done"] for job in jobs_of(res.stdout)}
        assert done == {sleep: "exit 143 (killed by SIGTERM)", "exit 1": "exit 1"}, res.stdout
        assert "halted: --halt now,fail=1: 1 job failed" in res.stdout
        assert res.returncode == 1, res.stdout + res.stderr
        gone(cluster, a, sleep)
        gone(cluster, b, sleep)
    finally:
        for alias in (a, b):
            cluster.ssh(alias, "pkill -9 -f '[s]%s'; true" % sleep[1:])
    assert queue_entries(tmp_path / "queue.yaml") == ["echo never"]


# ---------------------------------------------------------------- failed.yaml

def test_failed_yaml_and_requeue_failed(cluster, run_pegasus, tmp_path):
    a = cluster.aliases[0]
    write_run(tmp_path, [a], ["exit 3", "echo fine", {"command": "sleep 30", "timeout": "1"}])
    ssh = ["--ssh-config", cluster.ssh_config]

    res = run_pegasus(["q", *ssh], tmp_path)

    assert res.returncode == 1, res.stdout + res.stderr
    failed = (tmp_path / "failed.yaml").read_text()
    assert " #1 for [%s]: exit 3\n" % a in failed
    assert " #3 for [%s]: timed out after 1s, exit 124\n" % a in failed
    assert yaml.safe_load(failed) == [{"command": "exit 3"},
                                      {"command": "sleep 30", "timeout": "1"}]

    dry = run_pegasus(["requeue", "--failed", "--dry-run"], tmp_path)
    assert "--dry-run: 2 failed jobs would move from" in dry.stdout, dry.stdout + dry.stderr
    assert (tmp_path / "failed.yaml").read_text() == failed
    assert queue_entries(tmp_path / "queue.yaml") == []

    moved = run_pegasus(["requeue", "--failed"], tmp_path)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert queue_entries(tmp_path / "queue.yaml") == [{"command": "exit 3"},
                                                      {"command": "sleep 30", "timeout": "1"}]
    assert (tmp_path / "failed.yaml").read_text() == ""
