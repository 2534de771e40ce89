"""End-to-end benchmark of queue mode through the real ``pegasus`` CLI.

Starts its own loopback OpenSSH cluster (tests/cluster.py: one sshd per
127.0.0.x, must run as root), runs ``pegasus q`` as a subprocess in a fresh
folder for every run, and prints a table of targets, medians and pass/fail:

  (a) per-job overhead on ONE sub-node: (wall(N jobs) - wall(1 job)) / (N - 1)
  (b) drain rate of 1k / 10k / 100k ``true`` jobs over 8 sub-nodes
      (2 hosts x 4 slots, one SSH connection each):
      rate = jobs / (wall - wall(1 job on the same 8 sub-nodes))
  (c) 4 jobs on 4 hosts each printing 50 MB, as 100-byte lines and with no
      newline at all: wall time and peak RSS of the pegasus process
      (ru_maxrss from wait4() on its pid); pegasus's stdout is a pipe that
      this script drains.

Each figure is the median of --repeats runs (default 3), interleaved.

Run:  /tmp/venv/bin/python benchmarks/bench_queue.py [--quick] [--repeats N]
                                                      [--only a,b,c] [--strict]
                                                      [--pegasus-args=--no-logs]
--quick divides every size by 10 (smoke run). Exit status is 0 when every run
succeeded, whatever the figures; with --strict a missed target exits 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from cluster import Cluster  # noqa: E402

MB = 1024 * 1024
SLOTS = 4  # (b): 2 hosts x SLOTS slots = 8 sub-nodes
RUN_TIMEOUT = 3600.0


def pegasus_command() -> List[str]:
    """The installed console script next to this interpreter, else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "pegasus")
    if os.access(beside, os.X_OK):
        return [beside]
    found = shutil.which("pegasus")
    if found:
        return [found]
    sys.exit("bench_queue: no 'pegasus' command next to %s or on PATH; "
             "install Pegasus (pip install -e .)" % sys.executable)


def yaml_quote(command: str) -> str:
    return "'" + command.replace("'", "''") + "'"


class Run:
    """Outcome of one pegasus run."""

    def __init__(self, wall: float, cpu: float, maxrss_kb: int, out_bytes: int):
        self.wall = wall
        self.cpu = cpu  # user + system seconds of the pegasus process
        self.maxrss_kb = maxrss_kb
        self.out_bytes = out_bytes


class Bench:
    def __init__(self, cluster: Cluster, root: str, verbose: bool,
                 extra: Sequence[str] = ()):
        self.extra = list(extra)  # --pegasus-args: given to every pegasus q
        self.cluster = cluster
        self.root = root
        self.verbose = verbose
        self.pegasus = pegasus_command()
        self.counter = 0

    def run(self, hosts_yaml: str, commands: Sequence[str], expect_jobs: int,
            print_period: int) -> Run:
        """One ``pegasus q`` in a fresh folder; stdout drained through a pipe."""
        self.counter += 1
        folder = os.path.join(self.root, "run-%04d" % self.counter)
        os.makedirs(folder)
        with open(os.path.join(folder, "hosts.yaml"), "w") as f:
            f.write(hosts_yaml)
        with open(os.path.join(folder, "queue.yaml"), "w") as f:
            f.writelines("- %s\n" % yaml_quote(c) for c in commands)
        err_path = os.path.join(folder, "pegasus.stderr")
        argv = self.pegasus + ["q", "--ssh-config", self.cluster.ssh_config,
                               "-p", str(print_period)] + self.extra
        tail = b""
        total = 0
        with open(err_path, "wb") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(argv, cwd=folder, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=err)
            try:
                fd = proc.stdout.fileno()
                while True:
                    chunk = os.read(fd, MB)
                    if not chunk:
                        break
                    total += len(chunk)
                    tail = (tail + chunk)[-4096:]
                # wait4 gives this child's own rusage (ru_maxrss in KiB on
                # Linux), not the maximum over every child this script had.
                _, status, usage = os.wait4(proc.pid, 0)
                wall = time.perf_counter() - start
                proc.returncode = os.waitstatus_to_exitcode(status)
            except BaseException:
                if proc.returncode is None:
                    proc.kill()
                    proc.wait()
                raise
            finally:
                proc.stdout.close()
        with open(err_path, "rb") as f:
            errors = f.read().decode(errors="replace")
        summary = "%d job%s, all succeeded" % (expect_jobs, "" if expect_jobs == 1 else "s")
        if proc.returncode != 0 or summary not in tail.decode(errors="replace"):
            raise SystemExit("bench_queue: run in %s failed (exit %s)\nstderr:\n%s\n"
                             "stdout tail:\n%s" % (folder, proc.returncode, errors[-2000:],
                                                   tail.decode(errors="replace")[-2000:]))
        with open(os.path.join(folder, "queue.yaml")) as f:
            if f.read().strip():
                raise SystemExit("bench_queue: %s/queue.yaml is not empty after the run"
                                 % folder)
        shutil.rmtree(folder, ignore_errors=True)
        cpu = usage.ru_utime + usage.ru_stime
        if self.verbose:
            print("    %6d job(s): %8.3f s  cpu %7.2f s  maxrss %6.1f MB  stdout %.1f MB"
                  % (expect_jobs, wall, cpu, usage.ru_maxrss / 1024, total / 1e6),
                  file=sys.stderr, flush=True)
        return Run(wall, cpu, usage.ru_maxrss, total)


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt_times(values: Sequence[float]) -> str:
    return "[" + ", ".join("%.3f" % v for v in values) + "]"


def hosts_list(aliases: Sequence[str]) -> str:
    return "".join("- %s\n" % a for a in aliases)


def hosts_slots(aliases: Sequence[str], slots: int) -> str:
    return ("- hostname: [%s]\n  slot: [%s]\n"
            % (", ".join(aliases), ", ".join("'%d'" % (i + 1) for i in range(slots))))


# --------------------------------------------------------------------- (a)

def bench_a(b: Bench, n: int, repeats: int, rows: list) -> None:
    hosts = hosts_list(b.cluster.aliases[:1])
    print("(a) per-job overhead, 1 sub-node (node-1), %d x 'true' vs 1 x 'true', -p 0"
          % n, flush=True)
    one: List[Run] = []
    many: List[Run] = []
    for _ in range(repeats):
        one.append(b.run(hosts, ["true"], 1, 0))
        many.append(b.run(hosts, ["true"] * n, n, 0))
    w1, wn = [r.wall for r in one], [r.wall for r in many]
    c1, cn = [r.cpu for r in one], [r.cpu for r in many]
    per_job_ms = (med(wn) - med(w1)) / (n - 1) * 1000
    cpu_ms = (med(cn) - med(c1)) / (n - 1) * 1000
    print("    1 job    wall s: %s  median %.3f | pegasus cpu s: %s  median %.3f"
          % (fmt_times(w1), med(w1), fmt_times(c1), med(c1)))
    print("    %d jobs wall s: %s  median %.3f | pegasus cpu s: %s  median %.3f"
          % (n, fmt_times(wn), med(wn), fmt_times(cn), med(cn)))
    print("    => %.2f ms/job wall, of which %.2f ms/job pegasus cpu" % (per_job_ms, cpu_ms),
          flush=True)
    rows.append(("a. overhead/job, 1 sub-node, %d jobs" % n, "<= 4 ms",
                 "%.2f ms" % per_job_ms, per_job_ms <= 4.0))
    rows.append(("a. pegasus cpu/job, 1 sub-node", "(info)", "%.2f ms" % cpu_ms, None))


# --------------------------------------------------------------------- (b)

def bench_b(b: Bench, sizes: Sequence[int], repeats: int, rows: list) -> None:
    aliases = b.cluster.aliases[:2]
    hosts = hosts_slots(aliases, SLOTS)
    print("(b) drain rate, 8 sub-nodes = %d hosts x %d slots (one SSH connection each), "
          "'true' jobs, -p 0" % (len(aliases), SLOTS), flush=True)
    startup: List[Run] = []
    runs: Dict[int, List[Run]] = {n: [] for n in sizes}
    for _ in range(repeats):
        startup.append(b.run(hosts, ["true"], 1, 0))
        for n in sizes:
            runs[n].append(b.run(hosts, ["true"] * n, n, 0))
    s = med([r.wall for r in startup])
    s_cpu = med([r.cpu for r in startup])
    print("    startup (1 job) wall s: %s  median %.3f | pegasus cpu %.3f s"
          % (fmt_times([r.wall for r in startup]), s, s_cpu))
    rates = {}
    cpu_ms = {}
    for n in sizes:
        walls = [r.wall for r in runs[n]]
        rates[n] = n / (med(walls) - s)
        cpu_ms[n] = (med([r.cpu for r in runs[n]]) - s_cpu) / n * 1000
        print("    %6d jobs wall s: %s  median %.3f  => %.0f jobs/s | pegasus cpu %.2f ms/job"
              % (n, fmt_times(walls), med(walls), rates[n], cpu_ms[n]), flush=True)
    for n in sizes:
        rows.append(("b. rate, %s jobs, 8 sub-nodes" % _k(n), "(info)",
                     "%.0f jobs/s" % rates[n], None))
    for n in sizes:
        rows.append(("b. pegasus cpu/job, %s jobs" % _k(n), "(info)",
                     "%.2f ms" % cpu_ms[n], None))
    small, big = sizes[0], sizes[-1]
    ratio = rates[big] / rates[small]
    rows.append(("b. rate %s / rate %s" % (_k(big), _k(small)), ">= 0.80",
                 "%.3f" % ratio, ratio >= 0.8))


def _k(n: int) -> str:
    return "%dk" % (n // 1000) if n >= 1000 and n % 1000 == 0 else str(n)


# --------------------------------------------------------------------- (c)

def bench_c(b: Bench, size: int, repeats: int, rows: list) -> None:
    aliases = b.cluster.aliases[:4]
    hosts = hosts_list(aliases)
    lines_cmd = "yes \"$(head -c 99 /dev/zero | tr '\\0' x)\" | head -c %d" % size
    flat_cmd = "head -c %d /dev/zero | tr '\\0' x" % size
    print("(c) 4 jobs on 4 hosts, each printing %.0f MB; -p 1; pegasus stdout is a pipe "
          "drained by this script" % (size / MB), flush=True)
    print("    lines:      %s" % lines_cmd)
    print("    no newline: %s" % flat_cmd, flush=True)
    res: Dict[str, List[Run]] = {"lines": [], "flat": []}
    for _ in range(repeats):
        res["lines"].append(b.run(hosts, [lines_cmd] * 4, 4, 1))
        res["flat"].append(b.run(hosts, [flat_cmd] * 4, 4, 1))
    summary = {}
    for key, label in (("lines", "100-byte lines"), ("flat", "no newline")):
        walls = [r.wall for r in res[key]]
        rss = [r.maxrss_kb / 1024 for r in res[key]]
        out = med([r.out_bytes for r in res[key]]) / 1e6
        summary[key] = (med(walls), med(rss))
        print("    %-14s wall s: %s  median %.3f | peak RSS MB: %s  median %.1f | "
              "stdout %.1f MB" % (label, fmt_times(walls), med(walls),
                                  "[" + ", ".join("%.1f" % v for v in rss) + "]",
                                  med(rss), out), flush=True)
    tag = "%.0f MB" % (size / MB)
    for key, label in (("lines", "lines"), ("flat", "no newline")):
        wall, rss = summary[key]
        rows.append(("c. wall, 4 x %s, %s" % (tag, label), "(info)", "%.2f s" % wall, None))
        rows.append(("c. peak RSS, 4 x %s, %s" % (tag, label), "< 100 MB",
                     "%.1f MB" % rss, rss < 100))
    ratio = summary["flat"][0] / summary["lines"][0]
    rows.append(("c. wall no-newline / wall lines", "<= 1.50", "%.3f" % ratio, ratio <= 1.5))


# --------------------------------------------------------------------- main

def print_table(rows: list) -> None:
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len("target"), max(len(r[1]) for r in rows))
    w2 = max(len("measured"), max(len(r[2]) for r in rows))
    print()
    print("%-*s  %-*s  %-*s  %s" % (w0, "measurement", w1, "target", w2, "measured", "pass"))
    print("%s  %s  %s  %s" % ("-" * w0, "-" * w1, "-" * w2, "----"))
    for name, target, measured, ok in rows:
        verdict = "-" if ok is None else ("PASS" if ok else "FAIL")
        print("%-*s  %-*s  %*s  %s" % (w0, name, w1, target, w2, measured, verdict))
    sys.stdout.flush()


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def code_line() -> str:
    """The commit of the Pegasus under test (the pegasus command runs this tree)."""
    root = os.path.join(HERE, "..")
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "pegasus"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "commit unknown"
    if not head:
        return "commit unknown"
    return "commit %s%s" % (head, " + uncommitted changes in pegasus/" if dirty else "")


def machine_line(n_hosts: int) -> str:
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return ("%d CPU(s), Python %s, %s, loopback cluster of %d sshd"
            % (os.cpu_count() or 0, sys.version.split()[0], ssh, n_hosts))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="every size / 10 (smoke run)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    ap.add_argument("--only", default="a,b,c", help="comma-separated parts: a,b,c")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every run")
    ap.add_argument("--pegasus-args", default="",
                    help="more options for every pegasus q, e.g. --pegasus-args=--no-logs")
    args = ap.parse_args(argv)
    # SIGTERM: unwind, so the running pegasus and the cluster are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parts = set(args.only.split(","))
    scale = 10 if args.quick else 1
    n_a = 1000 // scale
    sizes_b = [1000 // scale, 10_000 // scale, 100_000 // scale]
    size_c = 50 * MB // scale

    workdir = tempfile.mkdtemp(prefix="pegasus-bench-")
    os.chmod(workdir, 0o755)  # sshd reads authorized_keys as the test user
    n_hosts = 4
    cluster = Cluster(os.path.join(workdir, "cluster"), n_hosts=n_hosts)
    rows: List[Tuple[str, str, str, Optional[bool]]] = []
    t0 = time.monotonic()
    load = "?"
    try:
        cluster.start()
        bench = Bench(cluster, os.path.join(workdir, "runs"), args.verbose,
                      args.pegasus_args.split())
        print("bench_queue%s: %s; median of %d run(s)"
              % (" --quick" if args.quick else "", machine_line(n_hosts), args.repeats),
              flush=True)
        load = loadavg()
        print("pegasus: %s (%s)" % (" ".join(bench.pegasus), code_line()), flush=True)
        print("load average at start: %s (other processes share the CPUs: figures "
              "taken under load are pessimistic)" % load, flush=True)
        if "a" in parts:
            bench_a(bench, n_a, args.repeats, rows)
        if "b" in parts:
            bench_b(bench, sizes_b, args.repeats, rows)
        if "c" in parts:
            bench_c(bench, size_c, args.repeats, rows)
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows)
    print("(total %.0f s; load average at start %s, at end %s)"
          % (time.monotonic() - t0, load, loadavg()))
    if args.strict and any(ok is False for *_, ok in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
