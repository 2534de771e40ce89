"""Pegasus side by side with its peers (a naive parallel-ssh script, ssh with a
ControlMaster, a plain ssh loop) on four workloads: a broadcast, short jobs,
sleeping jobs and output volume, with the goals of issue 16 (docs/performance.md).

Starts its own loopback OpenSSH cluster (tests/cluster.py; root; addresses
127.0.<PEGASUS_TEST_NET>.x) and runs each workload with each runner, in
interleaved rounds (round 1: every workload with every runner, then round 2,
...), every run in a fresh folder:

  workloads                                        runners
  broadcast  `echo` to every one of N hosts        pegasus  `pegasus b` / `pegasus q` subprocess
  short      200 short jobs over 8 sub-nodes       naive    benchmarks/naive_pssh.py (parallel-ssh)
             (2 hosts x 4 slots)                   cm       `ssh` through a ControlMaster per host
  sleep      400 x `sleep 0.05` on 32 sub-nodes    plain    `ssh`, a new connection per job
             (8 hosts x 4 slots)                   shell    naive_pssh.py --shell: one long-lived
                                                            shell a slot (only when named in --only;
                                                            short and sleep only)
  output     4 hosts each printing 50 MiB of 64-byte lines, every line
             prefixed with its node, to a file

Every run is checked: each job's output line (`ran-<n>`) is found exactly
once, and for `output` every byte is there under the right node's prefix
(the payload names the node's address). A failed check fails the benchmark.
The ssh runners write `output` to one file per host (`ssh | sed > file`:
several seds writing one file would cut lines); on the slow workloads the
plain loop runs 1/--plain-scale of the jobs and its time is scaled up.

Printed: the medians (wall seconds, including start-up), the CPU seconds of
the runner's processes (user+sys of every process it started and waited for:
pegasus and its `ssh -G`s, the naive script, ssh, sh, sed; a ControlMaster
that went to the background is not counted) and of the nodes (sshd's and
everything they ran, counted by a cgroup made for the listeners; without
cgroups, only the sessions the listeners reaped), pegasus's peak RSS (VmHWM,
sampled every 5 ms), and the ratios against the goals. The nodes share the
machine's cores with the runner: on 2 cores, a runner whose jobs cost the
nodes more CPU is slower for it. Python runs with byte code, as installed
(`byte_code`).

    python benchmarks/compare.py [--rounds 3] [--quick] [--only WORKLOAD,RUNNER,...]
                                 [--pegasus-args=--no-logs] [-v]

--only takes workload and runner names (either or both). --quick: small
sizes (a smoke run). Exit status 0 when every run passed its check.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from cluster import Cluster  # noqa: E402

MIB = 1024 * 1024
LINE = 64  # bytes of each output line, newline included
WORKLOADS = ("broadcast", "short", "sleep", "output")
RUNNERS = ("pegasus", "naive", "cm", "plain", "shell")
DEFAULT_RUNNERS = RUNNERS[:4]  # "shell" only when asked for (--only)
TICK = os.sysconf("SC_CLK_TCK")
RAN = re.compile(rb"ran-(\d+)$")


@dataclass(frozen=True)
class Sizes:
    broadcast: int  # hosts
    short: int      # jobs over 2 hosts x 4 slots
    sleep: int      # jobs over 8 hosts x 4 slots
    output: int     # bytes from each of 4 hosts

    @property
    def hosts(self) -> int:
        return max(self.broadcast, 8)


FULL = Sizes(broadcast=64, short=200, sleep=400, output=50 * MIB)
QUICK = Sizes(broadcast=8, short=40, sleep=64, output=1 * MIB)


@dataclass(frozen=True)
class Work:
    """One workload as every runner sees it: (host alias, slots) and commands."""

    name: str
    hosts: Tuple[str, ...]
    slots: int
    commands: Tuple[str, ...]
    broadcast: bool = False


@dataclass
class Measure:
    wall: float
    cpu: float           # the runner's processes, user+sys seconds
    node_cpu: float      # sshd's and what they ran
    rss_mb: Optional[float] = None
    scale: int = 1       # the plain loop ran 1/scale of the jobs; figures scaled


class Failed(Exception):
    """A run that did not do its work exactly (the message says what)."""


# ---------------------------------------------------------------- workloads

def output_command(size: int) -> str:
    """64-byte lines naming the node's address (the third word of SSH_CONNECTION)."""
    return ("set -- $SSH_CONNECTION; p=$(printf '%%-%ds' \"$3\" | tr ' ' x); "
            "yes \"$p\" | head -c %d" % (LINE - 1, size))


def workload(name: str, cluster: Cluster, sizes: Sizes, scale: int = 1) -> Work:
    aliases = tuple(cluster.aliases)
    if name == "broadcast":
        return Work(name, aliases[:sizes.broadcast], 1, ("echo ran-0",), broadcast=True)
    if name == "short":
        n = sizes.short // scale
        return Work(name, aliases[:2], 4, tuple("echo ran-%d" % i for i in range(n)))
    if name == "sleep":
        n = sizes.sleep // scale
        return Work(name, aliases[:8], 4,
                    tuple("sleep 0.05; echo ran-%d" % i for i in range(n)))
    return Work(name, aliases[:4], 1, (output_command(sizes.output),) * 4)


# ---------------------------------------------------------------- checks

def check_jobs(work: Work, chunks: Sequence[bytes], label_of: Callable[[bytes], str]) -> None:
    """Every job's ``ran-<n>`` line once (broadcast: once from every host)."""
    seen = collections.Counter()
    for data in chunks:
        for line in data.splitlines():
            m = RAN.search(line)
            if m and b"===" not in line and not line.startswith(b"pegasus"):
                key = label_of(line.split()[0]) if work.broadcast else ""
                seen[(key, int(m.group(1)))] += 1
    if work.broadcast:
        want = {(h, 0) for h in work.hosts}
    else:
        want = {("", i) for i in range(len(work.commands))}
    twice = sorted(k for k, v in seen.items() if v > 1)
    missing = sorted(want - set(seen))
    extra = sorted(set(seen) - want)
    if twice or missing or extra:
        raise Failed("%s: ran twice %s, missing %s, unexpected %s"
                     % (work.name, twice[:5], missing[:5], extra[:5]))


def check_output(work: Work, cluster: Cluster, path: str, size: int,
                 prefix: Callable[[str], bytes], slack: int) -> None:
    """Every host's lines whole, under its own prefix; at most ``slack`` other bytes.

    The file is read a piece at a time: this process stays small, so the
    processes it forks later start small (ru_maxrss counts what a child had
    between fork and exec)."""
    lines = {alias: prefix(alias) + cluster.address(alias).encode().ljust(LINE - 1, b"x")
             + b"\n" for alias in work.hosts}
    counts = dict.fromkeys(work.hosts, 0)
    total, rest = 0, b""
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(8 * MIB), b""):
            total += len(piece)
            data = rest + piece
            cut = data.rfind(b"\n") + 1
            data, rest = data[:cut], data[cut:]
            for alias, line in lines.items():
                counts[alias] += data.count(line)
    for alias in work.hosts:
        if counts[alias] != size // LINE:
            raise Failed("output: %d of %d lines from %s whole and prefixed"
                         % (counts[alias], size // LINE, alias))
    counted = sum(counts[a] * len(lines[a]) for a in work.hosts)
    if total - counted > slack:
        raise Failed("output: %d bytes more than the prefixed lines" % (total - counted))


# ---------------------------------------------------------------- measuring

class NodeCpu:
    """CPU seconds of the nodes: the sshd listeners and every process they
    started, counted by a cgroup of their own (cgroup v2's ``cpu.stat``, or v1's
    ``cpuacct``), so processes a session left behind (the wrapper's watchdog,
    re-parented to init) count too. Without a cgroup: the CPU of the sessions
    the listeners reaped, which misses those (said in the table's heading)."""

    ROOTS = (("/sys/fs/cgroup", "cpu.stat"), ("/sys/fs/cgroup/unified", "cpu.stat"),
             ("/sys/fs/cgroup/cpuacct", "cpuacct.usage"))

    def __init__(self, cluster: Cluster):
        self.cluster, self.path, self.kind = cluster, None, "reaped sessions"
        for root, name in self.ROOTS:
            if os.path.exists(os.path.join(root, "cgroup.procs")) and \
                    (name != "cpu.stat" or os.path.exists(os.path.join(root, name))
                     or os.path.exists(os.path.join(root, "cgroup.controllers"))):
                folder = os.path.join(root, "pegasus-compare-%d" % os.getpid())
                try:
                    os.mkdir(folder)
                    for proc in cluster._procs:  # noqa: SLF001 - the listeners' pids
                        if proc is not None:
                            with open(os.path.join(folder, "cgroup.procs"), "w") as f:
                                f.write(str(proc.pid))
                    self.path, self.kind = os.path.join(folder, name), "cgroup"
                    self.seconds()
                    return
                except OSError:
                    self.path = None
                    self.close(folder)
        return

    def seconds(self) -> float:
        if self.path is None:
            return _reaped_cpu(self.cluster)
        with open(self.path) as f:
            text = f.read()
        if self.path.endswith("cpuacct.usage"):
            return int(text) / 1e9
        return int(re.search(r"usage_usec (\d+)", text).group(1)) / 1e6

    def close(self, folder: Optional[str] = None) -> None:
        """Listeners back to the root group (they are stopped after), the group removed."""
        folder = folder or (os.path.dirname(self.path) if self.path else None)
        if folder is None or not os.path.isdir(folder):
            return
        try:
            with open(os.path.join(folder, "cgroup.procs")) as f:
                pids = f.read().split()
            for pid in pids:
                try:
                    with open(os.path.join(os.path.dirname(folder), "cgroup.procs"), "w") as f:
                        f.write(pid)
                except OSError:
                    pass
            os.rmdir(folder)
        except OSError:
            pass


def _reaped_cpu(cluster: Cluster) -> float:
    """CPU seconds of the sshd listeners and the sessions they reaped."""
    total = 0
    for proc in cluster._procs:  # noqa: SLF001 - the listeners' pids
        if proc is None:
            continue
        try:
            with open("/proc/%d/stat" % proc.pid, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            pass
    return total / TICK


def children_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


class Meter:
    """Wall, children's CPU and the nodes' CPU of one run."""

    nodes: Optional[NodeCpu] = None  # set by main, once the cluster runs

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.start = time.perf_counter()
        self.cpu0, self.node0 = children_cpu(), self.nodes.seconds()

    def done(self, rss_mb: Optional[float] = None) -> Measure:
        wall = time.perf_counter() - self.start
        cpu = children_cpu() - self.cpu0
        sessions_gone(self.cluster)  # their CPU counts once the listener reaped them
        return Measure(wall, cpu, self.nodes.seconds() - self.node0, rss_mb)


def sessions_gone(cluster: Cluster, timeout: float = 10.0) -> None:
    """Wait (a while at most) until no sshd listener has a session left."""
    listeners = {p.pid for p in cluster._procs if p is not None}  # noqa: SLF001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open("/proc/%s/stat" % name, "rb") as f:
                        ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if ppid in listeners:
                    busy = True
                    break
        if not busy:
            return
        time.sleep(0.02)


def run_process(argv: Sequence[str], cwd: str, stdout_path: str,
                timeout: float = 1800) -> Tuple[int, float]:
    """Run ``argv`` with stdout to a file; its exit status and peak RSS in MB."""
    with open(stdout_path, "wb") as out, open(stdout_path + ".err", "wb") as err:
        proc = subprocess.Popen(list(argv), cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        peak = 0
        while True:
            peak = max(peak, high_water_kb(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.005)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, peak / 1024


def high_water_kb(pid: int) -> int:
    """The process's peak RSS so far (VmHWM, KiB; 0 once it is gone). Not wait4's
    ru_maxrss: that also counts this process's pages, which a child holds
    between fork and exec."""
    try:
        with open("/proc/%d/status" % pid, "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def failure(what: str, path: str) -> Failed:
    err = read(path + ".err")[-1500:].decode(errors="replace") if os.path.exists(
        path + ".err") else ""
    tail = read(path)[-1500:].decode(errors="replace") if os.path.exists(path) else ""
    return Failed("%s\nstderr: %s\nstdout tail: %s" % (what, err, tail))


# ---------------------------------------------------------------- runners

class Runner:
    name = ""

    def __init__(self, cluster: Cluster, folder: str, sizes: Sizes, extra=()):
        self.cluster, self.folder, self.sizes, self.extra = cluster, folder, sizes, list(extra)

    def measure(self, work: Work) -> Measure:
        raise NotImplementedError

    def label_of(self, word: bytes) -> str:
        return word.decode()


class Pegasus(Runner):
    name = "pegasus"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        beside = os.path.join(os.path.dirname(sys.executable), "pegasus")
        self.argv = [beside] if os.access(beside, os.X_OK) else [sys.executable, "-m", "pegasus"]

    def measure(self, work: Work) -> Measure:
        with open(os.path.join(self.folder, "hosts.yaml"), "w") as f:
            if work.slots == 1:
                f.writelines("- %s\n" % h for h in work.hosts)
            else:
                f.write("- hostname: [%s]\n  slot: [%s]\n" % (
                    ", ".join(work.hosts), ", ".join("'%d'" % (i + 1) for i in range(work.slots))))
        with open(os.path.join(self.folder, "queue.yaml"), "w") as f:
            f.writelines("- '%s'\n" % c.replace("'", "''") for c in work.commands)
        out = os.path.join(self.folder, "stdout")
        argv = self.argv + ["b" if work.broadcast else "q", "-p", "1",
                            "--ssh-config", self.cluster.ssh_config] + self.extra
        meter = Meter(self.cluster)
        status, rss = run_process(argv, self.folder, out)
        measure = meter.done(rss)
        if status != 0:
            raise failure("pegasus %s: exit %d" % (work.name, status), out)
        if work.name == "output":
            check_output(work, self.cluster, out, self.sizes.output,
                         lambda alias: b"[" + alias.encode() + b"] ", 4096)
        else:
            check_jobs(work, [read(out)], self.label_of)
        return measure

    def label_of(self, word: bytes) -> str:
        return word.decode().strip("[]")


class Naive(Runner):
    name = "naive"
    shell = False

    def measure(self, work: Work) -> Measure:
        if work.name == "output":
            raise NotImplementedError
        jobs = os.path.join(self.folder, "jobs")
        with open(jobs, "w") as f:
            f.writelines(c + "\n" for c in work.commands)
        out = os.path.join(self.folder, "out")
        c = self.cluster
        argv = [sys.executable, os.path.join(HERE, "naive_pssh.py"), "--port", str(c.port),
                "--user", c.user, "--key", c.identity_file, "--jobs", jobs, "--out", out,
                "--slots", str(work.slots)] + (["--broadcast"] if work.broadcast else []) + \
            (["--shell"] if self.shell else []) + \
            [c.address(h) for h in work.hosts]
        meter = Meter(c)
        status, rss = run_process(argv, self.folder, out + ".stdout")
        measure = meter.done(rss)
        if status != 0:
            raise failure("naive %s: exit %d" % (work.name, status), out + ".stdout")
        check_jobs(work, [read(out)], self.label_of)
        return measure

    def label_of(self, word: bytes) -> str:
        return self.cluster.aliases[self.cluster.ips.index(word.decode())]


class LongShell(Naive):
    """The naive script with one long-lived shell a slot (``--shell``): the
    bound of issue 16's second idea, with none of the wrapper's guarantees."""

    name = "shell"
    shell = True


class Ssh(Runner):
    """A new ``ssh`` per job, from a thread per slot (plain); ``cm`` adds a
    ControlMaster per host, started and ended inside the timed run."""

    name = "plain"
    master = False
    retries = 0

    def ssh(self, host: str, command: str, **kw) -> subprocess.CompletedProcess:
        """``ssh host command``; a connection refused at start (sshd's MaxStartups
        drops it: exit 255 with nothing run) is tried again."""
        for attempt in range(10):
            res = subprocess.run(self.ssh_argv(host) + [command], stdin=subprocess.DEVNULL,
                                 capture_output=True, **kw)
            if res.returncode != 255 or res.stdout:
                return res
            self.retries += 1
            time.sleep(0.05 * (attempt + 1))
        return res

    def ssh_argv(self, host: str, *options: str) -> List[str]:
        argv = ["ssh", "-F", self.cluster.ssh_config]
        if self.master:
            argv += ["-o", "ControlPath=%s/%%C" % self.control, "-o", "ControlMaster=no"]
        return argv + list(options) + [host]

    def measure(self, work: Work) -> Measure:
        self.control = tempfile.mkdtemp(prefix="pcm-", dir="/tmp")  # a short socket path
        try:
            meter = Meter(self.cluster)
            if self.master:
                self.each_host(work.hosts, self.start_master)
            chunks = (self.output(work) if work.name == "output" else self.jobs(work))
            if self.master:
                self.each_host(work.hosts, self.stop_master)
            measure = meter.done()
        finally:
            shutil.rmtree(self.control, ignore_errors=True)
        if work.name != "output":
            check_jobs(work, chunks, self.label_of)
        return measure

    def each_host(self, hosts: Sequence[str], fn) -> None:
        errors: List[str] = []
        threads = [threading.Thread(target=lambda h=h: errors.extend(fn(h))) for h in hosts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise Failed("; ".join(errors[:3]))

    def start_master(self, host: str) -> List[str]:
        for attempt in range(10):
            res = subprocess.run(["ssh", "-F", self.cluster.ssh_config, "-o",
                                  "ControlPath=%s/%%C" % self.control, "-o",
                                  "ControlPersist=yes", "-M", "-N", "-f", host],
                                 stdin=subprocess.DEVNULL, capture_output=True)
            if res.returncode == 0:
                return []
            self.retries += 1
            time.sleep(0.05 * (attempt + 1))
        return ["master for %s: %s" % (host, res.stderr.decode(errors="replace").strip())]

    def stop_master(self, host: str) -> List[str]:
        subprocess.run(self.ssh_argv(host, "-O", "exit"), stdin=subprocess.DEVNULL,
                       capture_output=True)
        return []

    def jobs(self, work: Work) -> List[bytes]:
        todo = list(reversed(work.commands))
        lock = threading.Lock()
        chunks: List[bytes] = []

        def slot(host: str) -> List[str]:
            errors, mine = [], list(todo) if work.broadcast else None
            while True:
                with lock:
                    source = mine if mine is not None else todo
                    if not source:
                        return errors
                    command = source.pop()
                res = self.ssh(host, command)
                if res.returncode != 0:
                    errors.append("%s %r: exit %d %s" % (host, command, res.returncode,
                                                         res.stderr.decode(errors="replace")))
                prefixed = b"".join(host.encode() + b" " + line + b"\n"
                                    for line in res.stdout.splitlines())
                with lock:
                    chunks.append(prefixed)

        self.each_host([h for h in work.hosts for _ in range(work.slots)], slot)
        return chunks

    def output(self, work: Work) -> List[bytes]:
        files = {h: os.path.join(self.folder, "out.%s" % h) for h in work.hosts}
        script = "".join("%s %s | sed 's/^/%s /' > %s &\n" % (
            " ".join(self.ssh_argv(h)), shlex_quote(work.commands[0]), h, files[h])
            for h in work.hosts) + "wait\n"
        res = subprocess.run(["sh", "-c", script], stdin=subprocess.DEVNULL,
                             capture_output=True)
        if res.returncode != 0:
            raise Failed("%s output: exit %d %s" % (self.name, res.returncode, res.stderr))
        for h in work.hosts:
            one = Work(work.name, (h,), 1, work.commands)
            check_output(one, self.cluster, files[h], self.sizes.output,
                         lambda alias: alias.encode() + b" ", 0)
            os.unlink(files[h])
        return []


class ControlMaster(Ssh):
    name = "cm"
    master = True


def shlex_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# ---------------------------------------------------------------- the table

GOALS = {  # workload: (runner compared with, at most this many times its time)
    "broadcast": ("naive", 1.0),
    "short": ("naive", 0.5),
    "sleep": ("naive", 0.6),
    "output": ("plain", 1.2),
}
TITLES = {
    "broadcast": "broadcast `echo` to %d hosts",
    "short": "%d short jobs over 8 sub-nodes",
    "sleep": "%d x `sleep 0.05` on 32 sub-nodes",
    "output": "4 x %d MiB of 64-byte lines, to a file",
}


def title(name: str, sizes: Sizes) -> str:
    n = {"broadcast": sizes.broadcast, "short": sizes.short, "sleep": sizes.sleep,
         "output": sizes.output // MIB}[name]
    return TITLES[name] % n


def print_table(results: Dict[Tuple[str, str], List[Measure]], sizes: Sizes,
                workloads: Sequence[str], runners: Sequence[str], nodes: str = "") -> None:
    print()
    print("wall seconds, median of rounds (runner CPU s / node CPU s%s)"
          % (", nodes: " + nodes if nodes else ""))
    head = "%-40s" % "workload" + "".join("%24s" % r for r in runners) + "  goal"
    print(head)
    print("-" * len(head))
    for w in workloads:
        cells = []
        for r in runners:
            ms = results.get((w, r))
            if not ms:
                cells.append("%24s" % "-")
                continue
            scale = ms[0].scale
            cell = "%.2f%s (%.1f/%.1f)" % (
                scale * med(m.wall for m in ms), "*" if scale > 1 else "",
                scale * med(m.cpu for m in ms), scale * med(m.node_cpu for m in ms))
            cells.append("%24s" % cell)
        print("%-40s" % title(w, sizes) + "".join(cells) + "  " + goal_text(results, w))
    rss = results.get(("output", "pegasus"))
    if rss:
        mb = med(m.rss_mb for m in rss)
        print("pegasus peak RSS, output: %.1f MB (goal < 100 MB: %s)"
              % (mb, "met" if mb < 100 else "NOT met"))
    if any(ms[0].scale > 1 for ms in results.values() if ms):
        scale = max(ms[0].scale for ms in results.values() if ms)
        print("* ran 1/%d of the jobs, figures multiplied by %d" % (scale, scale))
    sys.stdout.flush()


def goal_text(results, workload: str) -> str:
    other, limit = GOALS[workload]
    mine, theirs = results.get((workload, "pegasus")), results.get((workload, other))
    if not mine or not theirs:
        return "(<= %.1f x %s: not measured)" % (limit, other)
    ratio = med(m.wall for m in mine) / (theirs[0].scale * med(m.wall for m in theirs))
    return "%.2f x %s (<= %.1f: %s)" % (ratio, other, limit, "met" if ratio <= limit
                                         else "NOT met")


def med(values) -> float:
    return statistics.median(list(values))


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def commit() -> str:
    root = os.path.join(HERE, "..")
    head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "pegasus"],
                           capture_output=True, text=True).stdout.strip()
    return head + (" + uncommitted changes in pegasus/" if dirty else "")


# ---------------------------------------------------------------- main

def parse_only(text: str) -> Tuple[List[str], List[str]]:
    names = [n for n in text.split(",") if n] if text else []
    bad = [n for n in names if n not in WORKLOADS + RUNNERS]
    if bad:
        sys.exit("compare: --only: unknown %s (workloads: %s; runners: %s)"
                 % (", ".join(bad), ", ".join(WORKLOADS), ", ".join(RUNNERS)))
    return ([w for w in WORKLOADS if w in names] or list(WORKLOADS),
            [r for r in RUNNERS if r in names] or list(DEFAULT_RUNNERS))


def byte_code(workdir: str) -> None:
    """Every Python the runs start finds its modules compiled, as after a
    ``pip install`` (site-packages are compiled then; an editable Pegasus is
    not), even where PYTHONDONTWRITEBYTECODE is set: else each pegasus run
    compiles some 70 modules (0.08 s here) that the naive script's do not."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(workdir, "pycache")
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    os.path.join(HERE, "..", "pegasus"), HERE], check=False,
                   stdout=subprocess.DEVNULL)


def one_run(cls, cluster, sizes, workdir, counter, name, scale, extra, verbose):
    folder = os.path.join(workdir, "run-%04d" % counter)
    os.makedirs(folder)
    os.chmod(folder, 0o755)
    runner = cls(cluster, folder, sizes, extra)
    work = workload(name, cluster, sizes, scale)
    measure = runner.measure(work)
    measure.scale = scale
    if verbose:
        print("  %-9s %-8s %7.2f s  cpu %6.2f  nodes %6.2f%s%s" % (
            name, runner.name, measure.wall, measure.cpu, measure.node_cpu,
            "" if measure.rss_mb is None else "  rss %.1f MB" % measure.rss_mb,
            "  (%d connections retried)" % runner.retries if getattr(runner, "retries", 0)
            else ""), flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    return measure


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + (
        " Needs root (it starts its own sshd nodes on 127.0.N.x, N from PEGASUS_TEST_NET). "
        "The goals are set for the full sizes: --quick is a smoke run."))
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds; the medians of their runs are printed")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--only", default="",
                    help="workloads (%s) and/or runners (%s; shell only when named), "
                    "comma-separated" % (", ".join(WORKLOADS), ", ".join(RUNNERS)))
    ap.add_argument("--plain-scale", type=int, default=4,
                    help="the plain ssh loop runs 1/N of the short and sleep jobs")
    ap.add_argument("--pegasus-args", default="", help="more options for every pegasus run")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every run")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workloads, runners = parse_only(args.only)
    sizes = QUICK if args.quick else FULL
    classes = {"pegasus": Pegasus, "naive": Naive, "cm": ControlMaster, "plain": Ssh,
               "shell": LongShell}
    workdir = tempfile.mkdtemp(prefix="pegasus-compare-", dir="/tmp")
    os.chmod(workdir, 0o755)
    cluster = Cluster(os.path.join(workdir, "cluster"), n_hosts=sizes.hosts)
    results: Dict[Tuple[str, str], List[Measure]] = collections.defaultdict(list)
    load, t0, counter = "?", time.monotonic(), 0
    byte_code(workdir)
    try:
        cluster.start()
        cluster.seed_known_hosts()
        Meter.nodes = NodeCpu(cluster)
        load = loadavg()
        print("compare%s: %d CPU(s), Python %s, %s, %d sshd on 127.0.x; commit %s; "
              "%d round(s); load average %s" % (
                  " --quick" if args.quick else "", os.cpu_count() or 0,
                  sys.version.split()[0], subprocess.run(
                      ["ssh", "-V"], capture_output=True, text=True).stderr.strip(),
                  sizes.hosts, commit(), args.rounds, load), flush=True)
        for rnd in range(args.rounds):
            if args.verbose:
                print("round %d" % (rnd + 1), flush=True)
            for name in workloads:
                for r in runners:
                    if r in ("naive", "shell") and name == "output" or \
                            r == "shell" and name == "broadcast":
                        continue  # the naive script's line iterator: not a peer here
                    scale = args.plain_scale if (r == "plain" and name in ("short", "sleep")) \
                        else 1
                    counter += 1
                    results[(name, r)].append(one_run(
                        classes[r], cluster, sizes, os.path.join(workdir, "runs"), counter,
                        name, scale, args.pegasus_args.split(), args.verbose))
    except Failed as err:
        print("compare: a run failed its check: %s" % err, file=sys.stderr)
        return 1
    finally:
        if Meter.nodes is not None:
            Meter.nodes.close()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(results, sizes, workloads, runners, Meter.nodes.kind if Meter.nodes else "")
    print("(total %.0f s; load average at start %s, at end %s)"
          % (time.monotonic() - t0, load, loadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
