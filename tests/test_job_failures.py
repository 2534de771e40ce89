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
