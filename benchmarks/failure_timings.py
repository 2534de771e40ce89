"""Failure timings: how fast Pegasus notices failing hosts, what a pause costs, how fast jobs die.

Run as root (it starts sshd's, a network namespace and a TCP listener), from
the repository:

    python benchmarks/failure_timings.py [--quick] [--rounds N] [--slow-rounds M]
                                         [--only GROUP,...]

It starts its own lab (``Lab``): two sshd nodes (node-1, node-2 on
127.0.0.121-122), a silent TCP peer on 127.0.0.123 (accepts connections,
never says a word; also under 12 more aliases, silent-1 .. silent-12), a
refused port on 127.0.0.124 (nothing listens), a black hole on 127.0.0.125
(a listener whose queue is full: SYNs are dropped) and a host in a network
namespace of its own (an sshd behind a veth pair with
link-local addresses, whose link can be taken down). It runs the real
``python -m pegasus`` against them with an ssh_config of its own (as a user
without ``ServerAliveInterval`` or ``BatchMode`` has it), and polls /proc
and Pegasus's output every 10 ms. The groups (``--only``):

hosts   a host that fails mid-job: its sshd killed (noticed at once), its
        sshd's SIGSTOPped (``cluster.freeze_host``: the kernel still
        acknowledges TCP, only keepalives that want a reply notice), its link
        taken down (a silent partition; and whether the job runs on there)
start   a host that is dead when Pegasus starts, beside a healthy one: a
        silent TCP peer, 12 of them (more than gevent's 10 shared threads), a
        refused port, a black-holed address, a link that is down. When Pegasus
        names it, when it reports it unreachable, and the key figure: when
        jobs start on the healthy host (against a run without a dead host)
cancel  jobs gone after a second Ctrl-c, a SIGTERM or a SIGKILL of Pegasus
        (a job that obeys TERM, one that ignores it, Pegasus's wrapper and
        watchdog), and Pegasus's exit; the same with a hung host
pauses  Pegasus SIGSTOPped mid-job for 5 s, 60 s (skipped by ``--quick``)
        and 15 s with ``--orphan-timeout 10``: whether the remote job
        survives, how it was reported; a partition with
        ``--orphan-timeout 10``: when the node stops the job
quiet   a healthy host whose job prints nothing for 45 s (longer than the
        30 s after which a silent host is "not responding"), with
        ServerAliveInterval unset, with BatchMode yes (Debian's ssh then
        defaults ServerAliveInterval to 300) and with ServerAliveInterval 60:
        the job must run to its end

Prints one row per measurement: the median, min and max over the rounds,
or what happened. A deliberate pause is the scenario; everything else is
waited for by polling with a deadline. Helpers (the netns host, the sshd
crash, the background Pegasus) come from tests/.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from cluster import Cluster  # noqa: E402
from helpers import Pegasus, jobs_of  # noqa: E402
from test_failing_hosts import NetnsHost, crash_sshd, marked_pids  # noqa: E402

TICK = 0.01
FIRST_IP = 121  # 127.0.0.121 and up: node-1, node-2, the silent peer, the refused port, the hole
SILENT_ALIASES = ["silent-%d" % i for i in range(1, 13)]  # more names of the silent peer
GROUPS = ("hosts", "start", "cancel", "pauses", "quiet")


# ---------------------------------------------------------------- polling

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


def since(start, predicate, timeout):
    """Seconds from ``start`` (a monotonic time) until predicate() is true, or None."""
    if poll(predicate, timeout) is None:
        return None
    return time.monotonic() - start


def first_times(start, checks, timeout, enough=None):
    """{name: seconds from ``start`` until checks[name]() first held, or None}.

    Polls every check every 10 ms until those named in ``enough`` (default:
    all) have held, or ``timeout`` seconds from ``start``."""
    took = dict.fromkeys(checks)
    enough = list(checks) if enough is None else enough
    while time.monotonic() - start < timeout:
        for name, check in checks.items():
            if took[name] is None and check():
                took[name] = time.monotonic() - start
        if all(took[name] is not None for name in enough):
            break
        time.sleep(TICK)
    return took


def line_with(peg, text):
    """The first line Pegasus said (stdout or stderr) that contains ``text``, or None."""
    for line in peg.said().splitlines():
        if text in line:
            return line
    return None


def exited(peg):
    return peg.proc.poll() is not None


# ---------------------------------------------------------------- the lab

class SilentPeer:
    """A TCP listener that accepts connections and never says a word (a hung
    service, a tarpit): an SSH client waits for a banner that never comes."""

    def __init__(self, ip):
        self.sock = socket.create_server((ip, 0), backlog=64)
        self.ip, self.port = ip, self.sock.getsockname()[1]
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.held.append(conn)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        except OSError:
            pass
        self.sock.close()
        for conn in self.held:
            conn.close()


class BlackHole:
    """An address where SYNs are dropped (a listener whose accept queue is full): a
    connection attempt waits for a SYN-ACK that never comes, as to a dead address."""

    def __init__(self, ip):
        self.sock = socket.create_server((ip, 0), backlog=0)
        self.ip, self.port = ip, self.sock.getsockname()[1]
        self.fill = []
        for _ in range(3):
            conn = socket.socket()
            conn.setblocking(False)
            conn.connect_ex((ip, self.port))
            self.fill.append(conn)

    def close(self):
        for conn in self.fill + [self.sock]:
            conn.close()


def host_block(alias, ip, port, cluster, extra=()):
    """One ``Host`` of the lab's ssh_config: what a user writes, no BatchMode,
    no ServerAliveInterval, no ConnectTimeout (so Pegasus's defaults apply)."""
    lines = ["Host " + alias, "HostName " + ip, "Port %d" % port, "User " + cluster.user,
             "IdentityFile " + cluster.identity_file, "IdentitiesOnly yes",
             "UserKnownHostsFile " + cluster.known_hosts, "GlobalKnownHostsFile /dev/null",
             "StrictHostKeyChecking accept-new", "HashKnownHosts no", *extra]
    return lines[0] + "\n" + "".join("    %s\n" % line for line in lines[1:]) + "\n"


class Lab:
    """Everything the measurements run against, and the ssh_config naming it."""

    def __init__(self, work, netns=True):
        self.work = work
        self.cluster = Cluster(os.path.join(work, "c"), n_hosts=2, first_ip=FIRST_IP)
        self.silent_ip = "127.0.0.%d" % (FIRST_IP + 2)
        self.refused_ip = "127.0.0.%d" % (FIRST_IP + 3)
        self.hole_ip = "127.0.0.%d" % (FIRST_IP + 4)
        self.hole = None
        self.netns = NetnsHost(os.path.join(work, "ns")) if netns else None
        self.peer = None
        self.ssh_config = os.path.join(work, "ssh_config")

    def start(self):
        self.cluster.start()
        if self.netns is not None:
            self.netns.start()
        self.peer = SilentPeer(self.silent_ip)
        self.hole = BlackHole(self.hole_ip)
        c = self.cluster
        blocks = [host_block(alias, ip, c.port, c) for alias, ip in zip(c.aliases, c.ips)]
        blocks += [
            host_block("silent", self.silent_ip, self.peer.port, c),
            host_block("refused", self.refused_ip, c.port, c),
            host_block("hole", self.hole_ip, self.hole.port, c),
            host_block("quiet-default", c.ips[0], c.port, c),
            host_block("quiet-batchmode", c.ips[0], c.port, c, ["BatchMode yes"]),
            host_block("quiet-alive60", c.ips[0], c.port, c, ["ServerAliveInterval 60"]),
        ]
        blocks += [host_block(alias, self.silent_ip, self.peer.port, c)
                   for alias in SILENT_ALIASES]
        if self.netns is not None:
            n = self.netns.cluster
            blocks.append(host_block(self.netns.alias, n.ips[0], n.port, n))
        with open(self.ssh_config, "w") as f:
            f.write("# failure_timings.py's lab\n\n" + "".join(blocks))
        return self

    def stop(self):
        if self.peer is not None:
            self.peer.close()
        if self.hole is not None:
            self.hole.close()
        try:
            if self.netns is not None:
                self.netns.stop()
        finally:
            self.cluster.stop()

    def folder(self, hosts, queue):
        d = tempfile.mkdtemp(prefix="pegasus-ft-")
        with open(os.path.join(d, "hosts.yaml"), "w") as f:
            f.write("".join("- %s\n" % h for h in hosts) if isinstance(hosts, list) else hosts)
        with open(os.path.join(d, "queue.yaml"), "w") as f:
            f.write("".join("- %s\n" % q for q in queue))
        return d

    def pegasus(self, folder, *args):
        return Pegasus(folder, ["q", "--ssh-config", self.ssh_config, *args])

    def flag(self):
        """A path in the nodes' scratch folder (they share this machine's file system)."""
        return os.path.join(self.cluster.scratch, "ft-" + uuid.uuid4().hex)


def job(marker, body):
    return "export %s=1; %s" % (marker, body)


def new_marker():
    return "PGFT" + uuid.uuid4().hex


def gate(path):
    """Shell: wait until the benchmark creates ``path``."""
    return "while [ ! -e %s ]; do sleep 0.05; done" % path


def touch(path):
    open(path, "a").close()


# ---------------------------------------------------------------- processes on the nodes

def scan(marker):
    """(pids of the job's own processes, pids of Pegasus's wrapper and watchdog).

    The job's processes carry the marker in their environment (it is
    exported) or in their command line (its shell); the wrapper and its
    watchdog have it in their command line after ``pegasus-job``.
    """
    found, wrapper = [], []
    for pid in marked_pids(marker):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        (wrapper if b"pegasus-job" in cmdline else found).append(pid)
    return found, wrapper


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


def until_gone(markers, peg, start, timeout):
    """Seconds after ``start`` until: each marker's job processes were gone
    (key: marker), every marked process incl. wrapper and watchdog ('all'),
    and Pegasus exited ('exit')."""
    took = {}
    while time.monotonic() - start < timeout:
        everything = []
        for m in markers:
            found, wrapper = scan(m)
            everything += found + wrapper
            if not found:  # the time after the scan: an upper bound
                took.setdefault(m, time.monotonic() - start)
        if not everything:
            took.setdefault("all", time.monotonic() - start)
        if exited(peg):
            took.setdefault("exit", time.monotonic() - start)
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


def ended(peg):
    """How Pegasus reported the run's jobs: their done frames, in start order."""
    return [j["done"] for j in jobs_of(peg.out())]


# ---------------------------------------------------------------- hosts that fail mid-job

def sshd_crash_noticed(lab):
    """Seconds from killing node-1's sshd mid-job to 'connection lost'."""
    m = new_marker()
    d = lab.folder(["node-1"], [job(m, "echo started; sleep 300")])
    peg = lab.pegasus(d)
    try:
        must(lambda: "started" in peg.out(), 30, "the job to start")
        start = time.monotonic()
        crash_sshd(lab.cluster, "node-1")  # includes cleaning up the node: an upper bound
        return since(start, lambda: "connection lost" in peg.said(), 60)
    finally:
        peg.stop()
        kill_all([m])
        lab.cluster.start_host(0)
        shutil.rmtree(d, ignore_errors=True)


def hung_host_noticed(lab):
    """Seconds from SIGSTOPping node-2's sshd's mid-job to 'not responding', and
    how the job there was reported."""
    m, started = new_marker(), lab.flag()
    d = lab.folder(["node-2"], [job(m, "touch %s; sleep 300" % started)])
    peg = lab.pegasus(d)
    index = lab.cluster.host_index("node-2")
    try:
        must(lambda: os.path.exists(started), 30, "the job on node-2 to start")
        lab.cluster.freeze_host(index)
        start = time.monotonic()
        try:
            noticed = since(start, lambda: "host node-2: not responding" in peg.said(), 120)
            reported = since(start, lambda: ended(peg) and ended(peg)[0], 30)
        finally:
            lab.cluster.thaw_host(index)
        return {"noticed": noticed, "reported": reported,
                "said": line_with(peg, "host node-2: not responding"),
                "done": ended(peg)[0] if ended(peg) else None}
    finally:
        peg.stop()
        kill_all([m])
        shutil.rmtree(d, ignore_errors=True)


def partition_noticed(lab):
    """Seconds from taking the netns host's link down mid-job to 'connection
    lost', and whether the job still ran on the host then."""
    host, m = lab.netns, new_marker()
    d = lab.folder([host.alias], [job(m, "echo started; sleep 300")])
    peg = lab.pegasus(d)
    try:
        must(lambda: "started" in peg.out() and job_running(m), 30, "the job to start")
        host.partition()
        start = time.monotonic()
        noticed = since(start, lambda: "connection lost" in peg.said(), 120)
        return {"noticed": noticed, "job runs on": job_running(m)}
    finally:
        peg.stop()
        host.heal()
        kill_all([m])
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- a dead host at start

def start_beside(lab, dead=(), partitioned=False):
    """Pegasus starts on node-1 and the hosts ``dead`` (none: node-1 alone).
    Seconds from starting Pegasus until: the job starts on node-1 ('jobs
    start'), Pegasus names the first of ``dead`` as still connecting
    ('named'), reports all unreachable ('reported', with the first one's line
    said: 'said'), exits once the job ends ('exit', with its 'status'). The
    job waits for the reports (or 45 s), so that the run lasts long enough to
    see them."""
    dead = [dead] if isinstance(dead, str) else list(dead)
    started, go = lab.flag(), lab.flag()
    hosts = ["node-1"] + dead
    d = lab.folder(hosts, ["touch %s; %s" % (started, gate(go))])
    if partitioned:
        lab.netns.partition()
    unreachable = "pegasus: host %s: " % dead[0] if dead else None
    checks = {"jobs start": lambda: os.path.exists(started)}
    if dead:
        checks["named"] = lambda: line_with(peg, "connecting: " + min(dead))
        checks["reported"] = lambda: all(line_with(peg, "pegasus: host %s: " % host)
                                         for host in dead)
    start = time.monotonic()
    peg = lab.pegasus(d)
    try:
        result = first_times(start, checks, 45,
                             enough=["jobs start"] + (["reported"] if dead else []))
        result["said"] = line_with(peg, unreachable) if dead else None
        touch(go)
        result["exit"] = since(start, lambda: exited(peg), 30)
        result["status"] = peg.proc.returncode
        return result
    finally:
        peg.stop()
        if partitioned:
            lab.netns.heal()
        shutil.rmtree(d, ignore_errors=True)
        for path in (started, go):
            if os.path.exists(path):
                os.remove(path)


# ---------------------------------------------------------------- stopping Pegasus

def send(peg, how):
    """Stop Pegasus as a user or the system would."""
    if how == "second Ctrl-c":
        peg.ctrl_c()
        must(lambda: "Ctrl-c" in peg.said(), 30, "the first Ctrl-c to be seen")
        peg.ctrl_c()
    elif how == "SIGTERM":
        peg.proc.send_signal(signal.SIGTERM)
    else:
        peg.proc.kill()


def cancel(lab, how, with_deaf=True):
    """{'plain', 'deaf', 'all', 'exit'}: seconds after the stopping signal."""
    plain, deaf = new_marker(), new_marker()
    markers = [plain, deaf] if with_deaf else [plain]
    jobs = [job(plain, "sleep 300"), job(deaf, "trap '' TERM; sleep 300")]
    d = lab.folder("- hostname: node-1\n  slot: [0, 1]\n", jobs[:len(markers)])
    peg = lab.pegasus(d)
    try:
        must(lambda: all(job_running(m) for m in markers), 30, "the jobs to start")
        send(peg, how)
        took = until_gone(markers, peg, time.monotonic(), 30)
        return {"plain": took.get(plain), "deaf": took.get(deaf), "all": took.get("all"),
                "exit": took.get("exit")}
    finally:
        peg.stop()
        kill_all(markers)
        shutil.rmtree(d, ignore_errors=True)


def cancel_with_hung_host(lab, how):
    """Seconds from a second Ctrl-c or a SIGTERM to Pegasus's exit while the
    host of its running job hangs (sshd's SIGSTOPped), its status and how the
    job was reported."""
    m, started = new_marker(), lab.flag()
    d = lab.folder(["node-2"], [job(m, "touch %s; sleep 300" % started)])
    peg = lab.pegasus(d)
    index = lab.cluster.host_index("node-2")
    try:
        must(lambda: os.path.exists(started), 30, "the job on node-2 to start")
        lab.cluster.freeze_host(index)
        try:
            start = time.monotonic()
            send(peg, how)
            took = since(start, lambda: exited(peg), 60)
        finally:
            lab.cluster.thaw_host(index)
        return {"exit": took, "status": peg.proc.returncode,
                "done": ended(peg)[0] if ended(peg) else None}
    finally:
        peg.stop()
        kill_all([m])
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- pauses of Pegasus

def pause(lab, seconds, orphan_timeout=None):
    """Pegasus SIGSTOPped for ``seconds`` while a job that lasts 3 s longer runs
    (as Ctrl-z, a closed laptop lid), then SIGCONT. Returns when the node
    stopped the job, counted from the SIGSTOP ('stopped on node', None: not
    during the pause), whether it ran to its end on the node ('finished'),
    how Pegasus reported it ('done', 'said': its own lines), when
    ('reported', after the SIGCONT) and its exit status ('status')."""
    m, finished = new_marker(), lab.flag()
    d = lab.folder(["node-1"], [job(m, "echo started; sleep %g; echo finished; touch %s"
                                    % (seconds + 3, finished))])
    args = ["--orphan-timeout", "%g" % orphan_timeout] if orphan_timeout else []
    peg = lab.pegasus(d, *args)
    try:
        must(lambda: "started" in peg.out() and job_running(m), 30, "the job to start")
        os.kill(peg.proc.pid, signal.SIGSTOP)
        start = time.monotonic()
        try:
            stopped = poll(lambda: not job_running(m), seconds)
            time.sleep(max(0.0, seconds - (time.monotonic() - start)))  # the pause itself
        finally:
            os.kill(peg.proc.pid, signal.SIGCONT)
        resumed = time.monotonic()
        reported = since(resumed, lambda: ended(peg) and ended(peg)[0], seconds + 60)
        must(lambda: exited(peg), 60, "Pegasus to end after the pause")
        must(lambda: not job_running(m), 30, "the job to end on the node")
        return {"stopped on node": stopped, "finished": os.path.exists(finished),
                "done": ended(peg)[0] if ended(peg) else None, "reported": reported,
                "status": peg.proc.returncode,
                "said": [line[len("pegasus: "):] for line in peg.said().splitlines()
                         if line.startswith("pegasus: ")]}
    finally:
        peg.stop()
        kill_all([m])
        shutil.rmtree(d, ignore_errors=True)
        if os.path.exists(finished):
            os.remove(finished)


def partition_orphaned(lab, orphan_timeout):
    """Seconds from taking the netns host's link down mid-job until the node
    has stopped the job (Pegasus's heartbeats no longer arrive)."""
    host, m = lab.netns, new_marker()
    d = lab.folder([host.alias], [job(m, "echo started; sleep 300")])
    peg = lab.pegasus(d, "--orphan-timeout", "%g" % orphan_timeout)
    try:
        must(lambda: "started" in peg.out() and job_running(m), 30, "the job to start")
        host.partition()
        return poll(lambda: not marked_pids(m), orphan_timeout + 30)
    finally:
        peg.stop()
        host.heal()
        kill_all([m])
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- quiet jobs on healthy hosts

QUIET_HOSTS = {  # alias in the lab's ssh_config -> what its Host block says
    "quiet-default": "ServerAliveInterval unset",
    "quiet-batchmode": "BatchMode yes (Debian: alive 300)",
    "quiet-alive60": "ServerAliveInterval 60",
}


def quiet_jobs(lab, seconds):
    """One job on each QUIET_HOSTS host (all node-1) that prints nothing for
    ``seconds``. {alias: {'done': its done frame, 'not responding': seconds
    after the jobs started when Pegasus said so (None: never), 'finished':
    whether it ran to its end on the node}}."""
    flags = lab.flag()
    os.mkdir(flags)
    os.chmod(flags, 0o777)
    m = new_marker()
    body = job(m, "echo started; sleep %g; touch %s/{{ hostname }}" % (seconds, flags))
    d = lab.folder(list(QUIET_HOSTS), [body] * len(QUIET_HOSTS))
    peg = lab.pegasus(d)
    try:
        must(lambda: peg.out().count("] started") == len(QUIET_HOSTS) or exited(peg), 60,
             "the jobs to start")
        checks = {alias: (lambda a=alias: "host %s: not responding" % a in peg.said())
                  for alias in QUIET_HOSTS}
        checks["exit"] = lambda: exited(peg)
        took = first_times(time.monotonic(), checks, seconds + 60, enough=["exit"])
        must(lambda: not job_running(m), seconds + 30, "the jobs to end on the node")
        done = {j["label"]: j["done"] for j in jobs_of(peg.out())}
        return {alias: {"done": done.get("[%s]" % alias), "not responding": took[alias],
                        "finished": os.path.exists(os.path.join(flags, alias))}
                for alias in QUIET_HOSTS}
    finally:
        peg.stop()
        kill_all([m])
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(flags, ignore_errors=True)


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
    say(name, text)


def say(name, text):
    print("%-62s %s" % (name, text), flush=True)


def seconds(value):
    return "never" if value is None else "%.2f s" % value


def header():
    def out(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=HERE,
                                  timeout=30).stdout.strip() or "?"
        except OSError:
            return "?"
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    dirty = " (with uncommitted changes)" if out("git", "status", "--porcelain",
                                                 "--untracked-files=no") != "?" else ""
    print("failure_timings: %s, commit %s%s" % (time.strftime("%Y-%m-%d %H:%M"),
                                                 out("git", "rev-parse", "--short", "HEAD"),
                                                 dirty))
    print("machine: %d cores, Linux %s, Python %s, %s, load average %s" % (
        os.cpu_count(), platform.release(), platform.python_version(), ssh,
        " ".join(open("/proc/loadavg").read().split()[:3])))
    print("%-62s %s" % ("measurement", "median (min, max, rounds) or what happened"),
          flush=True)


# ---------------------------------------------------------------- the groups

def measure_hosts(lab, args):
    row("dead host noticed: sshd killed mid-job",
        [sshd_crash_noticed(lab) for _ in range(args.rounds)], 60)
    hung = [hung_host_noticed(lab) for _ in range(args.slow_rounds)]
    row("hung host noticed: sshd's SIGSTOPped mid-job ('not responding')",
        [h["noticed"] for h in hung], 120)
    row("  ... its job reported lost", [h["reported"] for h in hung], 150)
    for h in hung[:1]:
        say("  ... said", repr(h["said"]))
        say("  ... the job", repr(h["done"]))
    if lab.netns is None:
        return say("dead host noticed: link down mid-job", "(skipped: no network namespace)")
    parts = [partition_noticed(lab) for _ in range(args.slow_rounds)]
    row("dead host noticed: link down mid-job (silent partition)",
        [p["noticed"] for p in parts], 120)
    say("  ... the job still runs on the host then",
        ", ".join("yes" if p["job runs on"] else "no" for p in parts))


def measure_start(lab, args):
    alone = [start_beside(lab) for _ in range(args.rounds)]
    row("start: jobs start, all hosts healthy (baseline)", [r["jobs start"] for r in alone], 60)
    dead_hosts = [("silent", "a silent TCP peer", args.slow_rounds, False),
                  (SILENT_ALIASES, "12 silent TCP peers", args.slow_rounds, False),
                  ("refused", "a refused port", args.rounds, False),
                  ("hole", "a black-holed address", args.slow_rounds, False)]
    if lab.netns is not None:
        dead_hosts.append((lab.netns.alias, "a host whose link is down", args.slow_rounds,
                           True))
    for alias, what, rounds, partitioned in dead_hosts:
        runs = [start_beside(lab, alias, partitioned) for _ in range(rounds)]
        row("start beside %s: jobs start on node-1" % what,
            [r["jobs start"] for r in runs], 60)
        row("  ... it is named as still connecting", [r["named"] for r in runs])
        row("  ... it is reported unreachable", [r["reported"] for r in runs], 45)
        say("  ... said", repr(runs[0]["said"]))
        say("  ... Pegasus's exit status once the queue is done",
            ", ".join(str(r["status"]) for r in runs))


def measure_cancel(lab, args):
    for how in ("second Ctrl-c", "SIGTERM", "SIGKILL of Pegasus"):
        runs = [cancel(lab, how) for _ in range(args.rounds)]
        row("jobs gone after %s: plain job" % how, [r["plain"] for r in runs], 30)
        row("jobs gone after %s: job ignoring TERM" % how, [r["deaf"] for r in runs], 30)
        row("  ... and Pegasus's wrapper and watchdog too", [r["all"] for r in runs], 30)
        if how != "SIGKILL of Pegasus":
            row("Pegasus exited after %s" % how, [r["exit"] for r in runs], 30)
    runs = [cancel(lab, "second Ctrl-c", with_deaf=False) for _ in range(args.rounds)]
    row("second Ctrl-c, one job that obeys TERM: job gone", [r["plain"] for r in runs], 30)
    row("  ... Pegasus exited", [r["exit"] for r in runs], 30)
    for how in ("second Ctrl-c", "SIGTERM"):
        runs = [cancel_with_hung_host(lab, how) for _ in range(args.rounds)]
        row("Pegasus exited after %s, its job's host hung" % how,
            [r["exit"] for r in runs], 60)
        say("  ... exit status; the job", "%s; %r" % (
            ", ".join(str(r["status"]) for r in runs), runs[0]["done"]))


def verdict(finished, done):
    """A job's fate in words: did it run to its end on the node, how was it reported."""
    if finished and done == "exit 0":
        return "survived: ran to its end, reported 'exit 0'"
    if finished:
        return "ran to its end on the node, but reported %r" % done
    return "did NOT survive: stopped on the node, reported %r" % done


def measure_pauses(lab, args):
    cases = [(5, None), (60, None), (15, 10)]
    for length, orphan in cases:
        if args.quick and length == 60:
            say("Pegasus paused 60 s", "(skipped: --quick)")
            continue
        name = "Pegasus paused %d s (%s)" % (
            length, "--orphan-timeout %d" % orphan if orphan else "default --orphan-timeout")
        r = pause(lab, length, orphan)
        say(name, verdict(r["finished"], r["done"]))
        say("  ... job stopped on the node during the pause", "never" if r["stopped on node"]
            is None else "%.2f s after the SIGSTOP" % r["stopped on node"])
        say("  ... reported (after the SIGCONT)", "%s: %r" % (seconds(r["reported"]), r["done"]))
        say("  ... Pegasus said; exit status", "%s; %s" % (
            " / ".join(line for line in r["said"] if not line.startswith("  ")), r["status"]))
    if lab.netns is None:
        return say("partition, --orphan-timeout 10", "(skipped: no network namespace)")
    row("partition (--orphan-timeout 10): the node stopped the job",
        [partition_orphaned(lab, 10) for _ in range(args.slow_rounds)], 40)


def measure_quiet(lab, args):
    r = quiet_jobs(lab, 45)
    for alias, what in QUIET_HOSTS.items():
        got = r[alias]
        say("quiet job, 45 s, healthy host, %s" % what, verdict(got["finished"], got["done"]) +
            ("" if got["not responding"] is None
             else " ('not responding' after %.1f s)" % got["not responding"]))


MEASURE = {"hosts": measure_hosts, "start": measure_start, "cancel": measure_cancel,
           "pauses": measure_pauses, "quiet": measure_quiet}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the quick measurements (default 3; --quick: 1)")
    parser.add_argument("--slow-rounds", type=int, default=1,
                        help="rounds of those that take 30 s or more: a hung host, a "
                             "partition, a silent peer, a link down (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help="one round of each, and no 60 s pause")
    parser.add_argument("--only", default=",".join(GROUPS),
                        help="comma-separated groups to measure, of: %s (default: all)"
                             % ", ".join(GROUPS))
    args = parser.parse_args()
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        parser.error("unknown group(s) %s; choose from %s" % (", ".join(unknown),
                                                              ", ".join(GROUPS)))
    if args.quick:
        args.rounds, args.slow_rounds = 1, 1
    Cluster.check_available()
    from test_failing_hosts import netns_unavailable  # noqa: E402
    no_netns = "the 'ip' command is missing" if shutil.which("ip") is None \
        else netns_unavailable()
    if no_netns:
        print("failure_timings: no network namespace (%s): partition rows skipped" % no_netns)
    work = tempfile.mkdtemp(prefix="pegasus-ft-lab-")
    os.chmod(work, 0o755)  # the test user reads authorized_keys under it
    lab = Lab(work, netns=not no_netns)
    try:
        lab.start()
        header()
        for group in groups:
            MEASURE[group](lab, args)
    finally:
        lab.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
