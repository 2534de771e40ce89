"""Failure timings: how fast Pegasus notices dead hosts and how fast cancelled jobs die.

Run as root (it starts sshd's and a network namespace), from the repository:

    python benchmarks/failure_timings.py [--rounds N] [--partition-rounds M]

It starts its own sshd node (127.0.0.51) and a host in a network namespace
of its own (an sshd behind a veth pair with link-local addresses), runs the
real ``python -m pegasus`` against them and measures, polling /proc and
Pegasus's output every 10 ms:

- dead host noticed: from taking the host's link down (silent partition)
  mid-job, or from killing its sshd, to Pegasus printing "connection lost";
- jobs gone: from the second Ctrl-c, a SIGTERM, or SIGKILL of Pegasus to
  the last process of a running remote job disappearing, for a plain job
  (``sleep``) and one that ignores TERM (so only the KILL that follows
  stops it); then to the last process of Pegasus's remote wrapper and
  watchdog disappearing too, and to Pegasus exiting;
- remote job after a partition (the laptop lost its connection): how long
  the job goes on running on the host, up to ``--partition-cap`` seconds.

Prints one row per measurement: the median, min and max over the rounds.
Helpers (the netns host, the sshd crash, the background Pegasus) come from
tests/test_failing_hosts.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from cluster import Cluster  # noqa: E402
from test_failing_hosts import NetnsHost, Pegasus, crash_sshd, marked_pids  # noqa: E402

TICK = 0.01


def poll(predicate, timeout):
    """Seconds until predicate() is true (checked every 10 ms), or None after timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(TICK)
    return None


def must(predicate, timeout, what):
    if poll(predicate, timeout) is None:
        raise SystemExit("failure_timings: timed out waiting for %s" % what)


def folder(hosts, queue):
    d = tempfile.mkdtemp(prefix="pegasus-ft-")
    with open(os.path.join(d, "hosts.yaml"), "w") as f:
        f.write(hosts)
    with open(os.path.join(d, "queue.yaml"), "w") as f:
        f.write("".join("- %s\n" % q for q in queue))
    return d


def job(marker, body):
    return "export %s=1; %s" % (marker, body)


def scan(marker):
    """(pids of the job's own processes, pids of Pegasus's wrapper and watchdog).

    The job's processes carry the marker in their environment (it is
    exported) or in their command line (its shell); the wrapper and its
    watchdog have it in their command line after ``pegasus-job``.
    """
    job, wrapper = [], []
    for pid in marked_pids(marker):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        (wrapper if b"pegasus-job" in cmdline else job).append(pid)
    return job, wrapper


def job_running(marker):
    """The job's environment-marked processes (its commands after 'export') exist."""
    for pid in scan(marker)[0]:
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                if marker.encode() in f.read():
                    return True
        except OSError:
            pass
    return False


def until_gone(markers, peg, since, timeout):
    """Seconds after ``since`` until: each marker's job processes were gone
    (key: marker), every marked process incl. wrapper and watchdog ('all'),
    and Pegasus exited ('exit')."""
    took = {}
    while time.monotonic() - since < timeout:
        everything = []
        for m in markers:
            job, wrapper = scan(m)
            everything += job + wrapper
            if not job:  # the time after the scan: an upper bound
                took.setdefault(m, time.monotonic() - since)
        if not everything:
            took.setdefault("all", time.monotonic() - since)
        if peg.proc.poll() is not None:
            took.setdefault("exit", time.monotonic() - since)
        if len(took) == len(markers) + 2:
            break
        time.sleep(TICK)
    return took


def kill_all(markers):
    for m in markers:
        for pid in marked_pids(m):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ---------------------------------------------------------------- measurements

def partition_noticed(host):
    m = "PGFT" + uuid.uuid4().hex
    d = folder("- %s\n" % host.alias, [job(m, "echo started; sleep 300")])
    peg = Pegasus(d, ["q", "--ssh-config", host.cluster.ssh_config])
    try:
        must(lambda: "started" in peg.out(), 30, "the job to start")
        host.partition()
        return poll(lambda: "connection lost" in peg.out(), 120)
    finally:
        peg.stop()
        host.heal()
        kill_all([m])
        shutil.rmtree(d, ignore_errors=True)


def partition_remote_job(host, cap):
    m = "PGFT" + uuid.uuid4().hex
    d = folder("- %s\n" % host.alias, [job(m, "echo started; sleep 300")])
    peg = Pegasus(d, ["q", "--ssh-config", host.cluster.ssh_config])
    try:
        must(lambda: "started" in peg.out() and job_running(m), 30, "the job to start")
        host.partition()
        return poll(lambda: not marked_pids(m), cap)
    finally:
        peg.stop()
        host.heal()
        kill_all([m])
        shutil.rmtree(d, ignore_errors=True)


def sshd_crash_noticed(cluster):
    m = "PGFT" + uuid.uuid4().hex
    d = folder("- node-1\n", [job(m, "echo started; sleep 300")])
    peg = Pegasus(d, ["q", "--ssh-config", cluster.ssh_config])
    try:
        must(lambda: "started" in peg.out(), 30, "the job to start")
        start = time.monotonic()
        crash_sshd(cluster, "node-1")  # includes cleaning up the node: an upper bound
        if poll(lambda: "connection lost" in peg.out(), 60) is None:
            return None
        return time.monotonic() - start
    finally:
        peg.stop()
        kill_all([m])
        cluster.start_host(0)
        shutil.rmtree(d, ignore_errors=True)


def cancel(cluster, how, with_deaf=True):
    """{'plain', 'deaf', 'all', 'exit'}: seconds after the stopping signal."""
    plain, deaf = "PGFT" + uuid.uuid4().hex, "PGFT" + uuid.uuid4().hex
    markers = [plain, deaf] if with_deaf else [plain]
    jobs = [job(plain, "sleep 300"), job(deaf, "trap '' TERM; sleep 300")]
    d = folder("- hostname: node-1\n  slot: [0, 1]\n", jobs[:len(markers)])
    peg = Pegasus(d, ["q", "--ssh-config", cluster.ssh_config])
    try:
        must(lambda: all(job_running(m) for m in markers), 30, "the jobs to start")
        if how == "second Ctrl-c":
            os.killpg(peg.proc.pid, signal.SIGINT)
            must(lambda: "Ctrl-c" in peg.out(), 30, "the first Ctrl-c to be seen")
            os.killpg(peg.proc.pid, signal.SIGINT)
        elif how == "SIGTERM":
            peg.proc.send_signal(signal.SIGTERM)
        else:
            peg.proc.kill()
        took = until_gone(markers, peg, time.monotonic(), 30)
        return {"plain": took.get(plain), "deaf": took.get(deaf), "all": took.get("all"),
                "exit": took.get("exit")}
    finally:
        peg.stop()
        kill_all(markers)
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- report

def row(name, values, cap=None):
    got = [v for v in values if v is not None]
    if not values:
        text = "(skipped: 0 rounds)"
    elif not got:
        text = "not within %g s" % cap if cap else "never"
    else:
        text = "%6.2f s  (min %.2f, max %.2f, n=%d)" % (
            statistics.median(got), min(got), max(got), len(got))
        if len(got) < len(values):
            text += ", %d of %d rounds: not within %g s" % (len(values) - len(got),
                                                            len(values), cap or 0)
    print("%-58s %s" % (name, text), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the quick measurements (default 3)")
    parser.add_argument("--partition-rounds", type=int, default=1,
                        help="rounds of the partition measurements, ~25 s each (default 1)")
    parser.add_argument("--partition-cap", type=float, default=30.0,
                        help="how long to watch a remote job after a partition (default 30)")
    args = parser.parse_args()
    Cluster.check_available()
    work = tempfile.mkdtemp(prefix="pegasus-ft-cluster-")
    os.chmod(work, 0o755)  # the test user reads authorized_keys under it
    cluster = Cluster(os.path.join(work, "c"), n_hosts=1, first_ip=51)
    host = NetnsHost(os.path.join(work, "ns"))
    try:
        cluster.start()
        host.start()
        print("%-58s %s" % ("measurement", "median (min, max, rounds)"))
        row("dead host noticed: link down mid-job (silent partition)",
            [partition_noticed(host) for _ in range(args.partition_rounds)], 120)
        row("dead host noticed: sshd killed mid-job",
            [sshd_crash_noticed(cluster) for _ in range(args.rounds)], 60)
        for how in ("second Ctrl-c", "SIGTERM", "SIGKILL of Pegasus"):
            runs = [cancel(cluster, how) for _ in range(args.rounds)]
            row("jobs gone after %s: plain job" % how, [r["plain"] for r in runs], 30)
            row("jobs gone after %s: job ignoring TERM" % how, [r["deaf"] for r in runs], 30)
            row("  ... and Pegasus's wrapper and watchdog too", [r["all"] for r in runs], 30)
            if how != "SIGKILL of Pegasus":
                row("Pegasus exited after %s" % how, [r["exit"] for r in runs], 30)
        runs = [cancel(cluster, "second Ctrl-c", with_deaf=False) for _ in range(args.rounds)]
        row("second Ctrl-c, one job that obeys TERM: job gone", [r["plain"] for r in runs], 30)
        row("  ... Pegasus exited", [r["exit"] for r in runs], 30)
        row("remote job gone after a partition (lost laptop connection)",
            [partition_remote_job(host, args.partition_cap)
             for _ in range(args.partition_rounds)], args.partition_cap)
    finally:
        host.stop()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
