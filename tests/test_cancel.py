"""Cancelling jobs: the real ``pegasus`` CLI, signalled, against real sshd nodes.

The first Ctrl-c is graceful (running jobs go on); a second Ctrl-c or a
SIGTERM stops every running job (TERM to its process group, KILL a few
seconds later); a Pegasus killed with SIGKILL leaves no job running.

Every job carries a unique marker: in its command line (so ``pgrep -f``
finds the shells) and exported as ``MARKER=<tag>`` (so its children, which
inherit the environment, are found too, in ``/proc/*/environ``). The nodes
are searched with one small POSIX script over ssh; the patterns are written
``[P]GMK...`` so the search never finds itself.

Nothing waits with a fixed sleep; the times the jobs took to die are printed
and recorded as figures (``record_property``), never asserted beyond the
polling deadline.
"""
import os
import signal
import subprocess
import time
import uuid

import pytest

from helpers import Pegasus, jobs_of, queue_entries, setup, wait_for

GONE_WITHIN = 15.0  # seconds: the polling deadline for jobs to disappear


# ---------------------------------------------------------------- helpers

class Marker:
    """A unique name for the jobs of one test, and where to look for them."""

    def __init__(self, run_sh):
        self.name = "PGMK" + uuid.uuid4().hex
        self.run_sh = run_sh  # [hosts] -> run a sh script on each, return stdout

    def job(self, tag, body):
        """A command that exports MARKER=tag to everything it starts, then runs body."""
        return "export %s=%s; %s" % (self.name, tag, body)

    def processes(self):
        """{tag or 'cmdline'} -> [pids] of the live processes of the marked jobs."""
        pattern = "[%s]%s" % (self.name[0], self.name[1:])
        script = ("grep -ao '%s=[a-z0-9]*' /proc/[0-9]*/environ 2>/dev/null; "
                  "pgrep -f '%s' | sed 's/$/ cmdline/'; true" % (pattern, pattern))
        found = {}
        for line in self.run_sh(script).splitlines():
            if line.startswith("/proc/"):
                path, _, var = line.partition(":")
                pid, tag = int(path.split("/")[2]), var.partition("=")[2]
            else:
                pid, tag = line.split()
                pid = int(pid)
            found.setdefault(tag, set()).add(pid)
        return found

    def tags(self):
        return set(self.processes()) - {"cmdline"}


def remote_sh(cluster, aliases):
    def run(script):
        out = []
        for alias in aliases:
            res = cluster.ssh(alias, script)
            assert res.returncode == 0, "%s: %s" % (alias, res.stderr)
            out.append(res.stdout)
        return "".join(out)
    return run


def local_sh(script):
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                          check=True, timeout=30).stdout


def ticks(peg):
    return sum(1 for line in peg.out().splitlines() if line.endswith("] tick"))


def remote_jobs(marker):
    """Four jobs, one per sub-node: plain, with a background child, deaf to TERM, chatty."""
    return {
        "plain": marker.job("plain", "sleep 300"),
        "bg": marker.job("bg", "sleep 300 & sleep 300"),
        "deaf": marker.job("deaf", "trap '' TERM; sleep 300"),
        "chatty": marker.job("chatty", "sh -c 'while :; do echo tick; sleep 0.2; done'"),
    }


def kill_leftovers(marker, run_sh):
    try:
        pids = sorted({p for ps in marker.processes().values() for p in ps})
        if pids:
            run_sh("kill -9 %s 2>/dev/null; true" % " ".join(map(str, pids)))
    except Exception:  # noqa: BLE001 - best effort clean-up
        pass


@pytest.fixture
def nodes(cluster):
    aliases = list(cluster.aliases[:2])
    return cluster, aliases, remote_sh(cluster, aliases)


def wait_gone(marker, since, record_property, name):
    """Poll until no process of the marked jobs is left; record how long it took.

    The time is taken when the first search that found nothing ended, so it
    includes up to one search (an ssh login per node) too many.
    """
    gone = []

    def nothing_left():
        if marker.processes():
            return False
        gone.append(time.monotonic() - since)
        return True

    try:
        wait_for(nothing_left, timeout=GONE_WITHIN - (time.monotonic() - since),
                 interval=0.02, what="every process of the cancelled jobs to be gone")
    finally:
        left = None if gone else marker.processes()
        took = gone[0] if gone else time.monotonic() - since
        print("\nFIGURE: %s: %s" % (name, "jobs gone after %.1f s" % took if gone
                                    else "still running after %.1f s: %r" % (took, left)))
    record_property(name + "_s", round(took, 1))


# ---------------------------------------------------------------- 1. remote jobs

@pytest.mark.slow
@pytest.mark.parametrize("how", ["second-ctrl-c", "sigterm"])
def test_second_ctrl_c_or_sigterm_stops_every_remote_job(nodes, tmp_path, record_property,
                                                         how):
    cluster, aliases, run_sh = nodes
    marker = Marker(run_sh)
    jobs = remote_jobs(marker)
    never = "echo never-runs-%s" % marker.name
    setup(tmp_path, "- hostname: [%s]\n  slot: [0, 1]\n" % ", ".join(aliases),
          list(jobs.values()) + [never])
    peg = Pegasus(tmp_path, ["q", "--ssh-config", cluster.ssh_config])
    try:
        wait_for(lambda: marker.tags() == set(jobs), what="the four jobs to run")
        if how == "second-ctrl-c":
            peg.ctrl_c()
            wait_for(peg.saw("Ctrl-c"), what="Pegasus to acknowledge the first Ctrl-c")
            # graceful: the jobs go on running (and printing)
            seen = ticks(peg)
            wait_for(lambda: ticks(peg) > seen, what="the chatty job to go on")
            assert marker.tags() == set(jobs), "the first Ctrl-c stopped jobs"
            assert peg.proc.poll() is None
            peg.ctrl_c()
        else:
            peg.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        status = peg.wait(timeout=30)
        exited = time.monotonic() - signalled
        print("\nFIGURE: %s: Pegasus exited after %.1f s" % (how, exited))
        record_property("pegasus_exit_s", round(exited, 1))
        wait_gone(marker, signalled, record_property, how)
    finally:
        peg.stop()
        kill_leftovers(marker, run_sh)
    out = peg.out()
    assert status == (130 if how == "second-ctrl-c" else 143), peg.said()
    done = {j["command"]: j["done"] for j in jobs_of(out)}
    assert done == {jobs["plain"]: "exit 143 (killed by SIGTERM)",
                    jobs["bg"]: "exit 143 (killed by SIGTERM)",
                    jobs["deaf"]: "exit 137 (killed by SIGKILL)",
                    jobs["chatty"]: "exit 143 (killed by SIGTERM)"}, out
    assert queue_entries(tmp_path / "queue.yaml") == [never]


@pytest.mark.slow
def test_pegasus_killed_with_sigkill_leaves_no_remote_job(nodes, tmp_path, record_property):
    cluster, aliases, run_sh = nodes
    marker = Marker(run_sh)
    jobs = remote_jobs(marker)
    setup(tmp_path, "- hostname: [%s]\n  slot: [0, 1]\n" % ", ".join(aliases),
          list(jobs.values()))
    sigkill_leaves_nothing(Pegasus(tmp_path, ["q", "--ssh-config", cluster.ssh_config]),
                           marker, jobs, record_property, "after-sigkill")


def sigkill_leaves_nothing(peg, marker, jobs, record_property, name, running=lambda: None):
    """Once every job runs (then ``running()``), SIGKILL to Pegasus: every process
    of the jobs is gone within the deadline (the time it took recorded as ``name``)."""
    try:
        wait_for(lambda: marker.tags() == set(jobs), what="the jobs to run")
        running()
        peg.proc.kill()
        killed = time.monotonic()
        peg.proc.wait(timeout=30)
        wait_gone(marker, killed, record_property, name)
    finally:
        peg.stop()
        kill_leftovers(marker, marker.run_sh)


# ---------------------------------------------------------------- 2. local jobs

@pytest.mark.slow
def test_pegasus_killed_with_sigkill_leaves_no_local_job(tmp_path, record_property):
    """As for remote jobs: a plain job, one with a background child, one deaf to
    TERM (KILL 3 s later). They ran on to their end before: a requeue after the
    crash then ran them twice at once."""
    marker = Marker(local_sh)
    jobs = {"plain": marker.job("plain", "sleep 300"),
            "bg": marker.job("bg", "sleep 300 & sleep 300"),
            "deaf": marker.job("deaf", "trap '' TERM; sleep 300")}
    setup(tmp_path, "- hostname: localhost\n  slot: [0, 1, 2]\n", list(jobs.values()))
    sigkill_leaves_nothing(Pegasus(tmp_path, ["q"]), marker, jobs, record_property,
                           "local-after-sigkill")


def guards_of(pid):
    """The local-job guards (pegasus/local.py's _Guard) Pegasus ``pid`` started."""
    found = []
    for name in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % name) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"groups=' '" in cmdline:
            found.append(int(name))
    return found


@pytest.mark.slow
def test_local_jobs_starting_together_share_one_guard(tmp_path, record_property):
    """Eight local jobs starting at once: one guard, which every job is named to.
    Each started a guard of its own while the first was starting (2 to 8 of
    them): jobs named to none escaped a kill -9, and a guard that missed a job's
    end would signal its group long after (the adversarial review's find)."""
    marker = Marker(local_sh)
    jobs = {"j%d" % i: marker.job("j%d" % i, "sleep 300") for i in range(8)}
    setup(tmp_path, "- hostname: localhost\n  slot: [%s]\n" % ", ".join(map(str, range(8))),
          list(jobs.values()))
    peg, guards = Pegasus(tmp_path, ["q"]), []
    sigkill_leaves_nothing(peg, marker, jobs, record_property, "eight-local-after-sigkill",
                           lambda: guards.extend(guards_of(peg.proc.pid)))
    assert len(guards) == 1, guards


@pytest.mark.slow
def test_second_ctrl_c_stops_local_jobs_too(tmp_path, record_property):
    marker = Marker(local_sh)
    jobs = {"plain": marker.job("plain", "sleep 300"),
            "deaf": marker.job("deaf", "trap '' TERM; sleep 300")}
    setup(tmp_path, "- hostname: localhost\n  slot: [0, 1]\n", list(jobs.values()))
    peg = Pegasus(tmp_path, ["q"])
    try:
        wait_for(lambda: marker.tags() == set(jobs), what="the two jobs to run")
        peg.ctrl_c()
        wait_for(peg.saw("Ctrl-c"), what="Pegasus to acknowledge the first Ctrl-c")
        assert marker.tags() == set(jobs), "the first Ctrl-c stopped local jobs"
        assert peg.proc.poll() is None
        peg.ctrl_c()
        signalled = time.monotonic()
        status = peg.wait(timeout=30)
        wait_gone(marker, signalled, record_property, "local-second-ctrl-c")
    finally:
        peg.stop()
        kill_leftovers(marker, local_sh)
    assert status == 130, peg.said()
    done = {j["command"]: j["done"] for j in jobs_of(peg.out())}
    assert done == {jobs["plain"]: "exit 143 (killed by SIGTERM)",
                    jobs["deaf"]: "exit 137 (killed by SIGKILL)"}, peg.out()
