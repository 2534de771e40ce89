"""Retries (issue 13) with the real ``pegasus`` against real sshd nodes.

A job that fails once with ``retries: 1`` runs twice and the run succeeds
(a file on the node says which attempt it is); without ``retries`` it runs
once; with ``retry_lost: true`` a job whose host's sshd is killed mid-job runs
again on another host. Nothing waits with a fixed sleep.
"""
import os
import random
import uuid

import yaml

from helpers import Pegasus, jobs_of, read, wait_for, write
from test_failing_hosts import crash_sshd


def write_run(folder, aliases, entries):
    write(str(folder / "hosts.yaml"), "".join("- %s\n" % a for a in aliases))
    write(str(folder / "queue.yaml"), yaml.safe_dump(entries, sort_keys=False))


def fails_once(marker):
    """Shell: fail the first time (leaving ``marker`` on the node), succeed after."""
    return ("if [ -e %s ]; then echo attempt {{attempt}} ok; else touch %s; "
            "echo attempt {{attempt}} fails; exit 1; fi" % (marker, marker))


def test_a_job_failing_once_with_retries_1_runs_twice_and_exits_0(cluster, run_pegasus,
                                                                  tmp_path):
    marker = "/tmp/pegasus-retry-" + uuid.uuid4().hex
    write_run(tmp_path, cluster.aliases[:1], [{"command": fails_once(marker), "retries": "1"}])
    try:
        res = run_pegasus(["q", "--ssh-config", cluster.ssh_config], tmp_path)
    finally:
        cluster.ssh(cluster.aliases[0], "rm -f %s" % marker)
    jobs = jobs_of(res.stdout)
    assert [(job["lines"], job["done"]) for job in jobs] == [
        (["attempt 1 fails"], "exit 1; it runs again"), (["attempt 2 ok"], "exit 0")], res.stdout
    assert "=== run #1 (attempt 2) " in res.stdout
    assert "1 job, all succeeded" in res.stdout
    assert res.returncode == 0, res.stdout + res.stderr


def test_without_retries_a_failing_job_runs_once(cluster, run_pegasus, tmp_path):
    marker = "/tmp/pegasus-retry-" + uuid.uuid4().hex
    write_run(tmp_path, cluster.aliases[:1], [fails_once(marker)])
    try:
        res = run_pegasus(["q", "--ssh-config", cluster.ssh_config], tmp_path)
    finally:
        cluster.ssh(cluster.aliases[0], "rm -f %s" % marker)
    assert [job["done"] for job in jobs_of(res.stdout)] == ["exit 1"], res.stdout
    assert res.returncode == 1


def test_retry_lost_runs_a_job_lost_with_its_host_again_on_another(cluster, tmp_path):
    """The job starts on the first host, whose sshd is killed; with 'retry_lost'
    its second attempt runs on the other host and the run succeeds."""
    first, other = cluster.aliases[:2]
    hosts_file = os.path.join(cluster.scratch, "hosts-" + uuid.uuid4().hex)  # nodes write it
    open(hosts_file, "w").close()
    os.chmod(hosts_file, 0o666)
    sleep = "sleep 1000.%06d" % random.randrange(10 ** 6)
    command = ("echo {{hostname}} >> %s; if [ {{hostname}} = %s ]; then %s; fi"
               % (hosts_file, first, sleep))
    write_run(tmp_path, [first, other],
              [{"command": command, "retries": "1", "retry_lost": "true"}])
    peg = Pegasus(tmp_path, ["q", "--ssh-config", cluster.ssh_config])
    index = cluster.host_index(first)
    try:
        wait_for(lambda: read(hosts_file) == first + "\n", what="the job to start on " + first)
        crash_sshd(cluster, first)
        wait_for(lambda: read(hosts_file) == "%s\n%s\n" % (first, other),
                 what="the job to run again on " + other)
        cluster.start_host(index)
        status = peg.wait()
    finally:
        peg.stop()
        cluster.start_host(index)
        os.unlink(hosts_file)
    out = peg.out()
    assert "it runs again (attempt 2 of 2)" in out, peg.said()
    assert [job["label"] for job in jobs_of(out)] == ["[%s]" % first, "[%s]" % other], out
    assert not os.path.exists(tmp_path / "interrupted.yaml") or \
        read(str(tmp_path / "interrupted.yaml")) == ""
    assert status == 0, peg.said()


# ---------------------------------------------------------------- the cancel hook

def pids_of(cluster, alias, sleep):
    res = cluster.ssh(alias, "pgrep -f '[s]%s'; true" % sleep[1:])
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def escaping_job(sleeper, sleep):
    """Shell: a sleeper in a session of its own (as a 'docker exec' job's processes
    belong to the container, not to the job's process group), then a sleep."""
    return "(setsid %s </dev/null >/dev/null 2>&1 &); %s" % (sleeper, sleep)


def test_a_cancel_hook_stops_what_escaped_the_jobs_process_group(cluster, run_pegasus,
                                                                 tmp_path):
    """Its timeout ends the job: the hook kills the escaped sleeper, TERM the rest.
    (Without the hook the escaped sleeper is still there: the second job.)"""
    a, b = cluster.aliases[:2]
    tag = "%06d" % random.randrange(10 ** 6)
    hooked, loose, sleep = "sleep 1001.%s" % tag, "sleep 1002.%s" % tag, "sleep 1003.%s" % tag
    write(str(tmp_path / "hosts.yaml"), "- %s\n- %s\n" % (a, b))
    write(str(tmp_path / "queue.yaml"), yaml.safe_dump([
        {"command": escaping_job(hooked, sleep), "timeout": "1",
         "cancel": "pkill -f '^%s'" % hooked},  # the sleeper, not the job's shell
        {"command": escaping_job(loose, sleep), "timeout": "1"}], sort_keys=False))
    try:
        res = run_pegasus(["q", "--ssh-config", cluster.ssh_config], tmp_path)
        assert "cancel hook of job #1: running 'pkill -f " in res.stdout, res.stdout
        assert [job["done"] for job in jobs_of(res.stdout)] == [
            "timed out after 1s, exit 124"] * 2, res.stdout
        wait_for(lambda: not pids_of(cluster, a, sleep) and not pids_of(cluster, b, sleep),
                 what="the jobs' own sleeps to be gone")
        assert pids_of(cluster, a, hooked) == [], "the hook did not stop the escaped sleeper"
        assert pids_of(cluster, b, loose) != [], "without a hook the escaped sleeper lives on"
    finally:
        for alias in (a, b):
            cluster.ssh(alias, "pkill -9 -f '[s]leep 100[123].%s'; true" % tag)
