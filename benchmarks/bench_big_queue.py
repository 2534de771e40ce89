"""A very large queue.yaml: the start-up check, peak memory, takes per second.

Run: python benchmarks/bench_big_queue.py [--mb 100] [--takes 20] [--seconds 10]

Writes a queue of one-line entries (``- echo job 17``) of about ``--mb`` MB
in a scratch folder, then measures, each in a fresh process:

- check: ``QueueFile.check_all`` over the whole file with a check that
  accepts every job (the reading alone), and "with templates": with the
  check ``pegasus q`` makes before its first job (``expand.checker`` of one
  ``localhost`` sub-node); wall time and peak RSS;
- take: ``Records.take`` of one job at the head, ``--takes`` times (lock,
  parse the head, rewrite the file atomically, append to consumed.yaml):
  takes per second and peak RSS;
- run: ``pegasus q`` with one ``localhost`` sub-node on a fresh copy of the
  queue: seconds until the first job's output, jobs finished in the next
  ``--seconds`` seconds, then a Ctrl-c; peak RSS of the whole run.

Peak RSS is ``ru_maxrss`` from ``wait4`` on the process, less the same
figure for a process that only imports Pegasus (the "idle" line).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def write_queue(path: str, megabytes: float) -> int:
    """A queue of ``- echo job N`` lines, about ``megabytes`` MB; its entries."""
    limit, size, n = int(megabytes * 1e6), 0, 0
    with open(path, "w") as f:
        while size < limit:
            block = "".join(f"- echo job {i}\n" for i in range(n, n + 10_000))
            f.write(block)
            size += len(block)
            n += 10_000
    return n


# ------------------------------------------------------------ child processes

def child_idle(path: str) -> None:
    from pegasus import queuefile, records  # noqa: F401  (the imports alone)
    print("idle")


def child_check(path: str) -> None:
    from pegasus.queuefile import QueueFile
    start = time.perf_counter()
    entries, jobs = QueueFile(path).check_all(lambda job: None)
    print(f"{time.perf_counter() - start:.3f} {entries} {jobs}")


def child_check_templates(path: str) -> None:
    """The check ``pegasus q`` makes: every job's template on a localhost sub-node."""
    from pegasus import expand
    from pegasus.model import SubNode
    from pegasus.queuefile import QueueFile
    check = expand.checker([SubNode(0, "localhost")])
    start = time.perf_counter()
    entries, jobs = QueueFile(path).check_all(check)
    print(f"{time.perf_counter() - start:.3f} {entries} {jobs}")


def child_take(path: str, takes: int) -> None:
    from pegasus.queuefile import QueueFile
    from pegasus.records import Records
    records = Records(QueueFile(path))
    times = []
    for _ in range(takes):
        start = time.perf_counter()
        taken = records.take(["[localhost]"], lambda job: None)
        times.append(time.perf_counter() - start)
        assert len(taken.jobs) == 1
    times.sort()
    print(" ".join(f"{t:.4f}" for t in times))


CHILDREN = {"idle": child_idle, "check": child_check, "templates": child_check_templates,
            "take": child_take}


def in_child(kind: str, path: str, *args) -> tuple:
    """Run one measurement in a fresh interpreter: (its stdout, peak RSS MB)."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", kind, path,
                             *map(str, args)], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the {kind} child failed (status {status})")
    return out.strip(), usage.ru_maxrss / 1024


# ------------------------------------------------------------ the whole command

def run_pegasus(folder: str, seconds: float) -> tuple:
    """`pegasus q` on a localhost sub-node: (s to first job, jobs in `seconds`, MB)."""
    with open(os.path.join(folder, "hosts.yaml"), "w") as f:
        f.write("- localhost\n")
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=REPO)  # this tree's Pegasus, whatever is installed
    proc = subprocess.Popen([sys.executable, "-m", "pegasus", "q", "-p", "0"],
                            cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                            env=env)
    first = _first_output(proc)
    first_at = time.perf_counter() - start
    time.sleep(seconds)
    os.kill(proc.pid, signal.SIGINT)
    proc.stdout.read()
    _, _, usage = os.wait4(proc.pid, 0)
    done = _consumed_entries(folder) - 1
    return first_at, done, usage.ru_maxrss / 1024, first


def _first_output(proc) -> str:
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("pegasus q printed nothing")
    return line.strip()


def _consumed_entries(folder: str) -> int:
    with open(os.path.join(folder, "consumed.yaml"), "rb") as f:
        return sum(1 for line in f if line.startswith(b"- "))


# ------------------------------------------------------------ main

def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=100, help="size of queue.yaml (MB)")
    ap.add_argument("--takes", type=int, default=20, help="takes to time at the head")
    ap.add_argument("--seconds", type=float, default=10,
                    help="how long `pegasus q` runs after its first job")
    ap.add_argument("--skip-run", action="store_true", help="no `pegasus q` run")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, path, *rest = args.child
        CHILDREN[kind](path, *map(int, rest))
        return 0
    folder = tempfile.mkdtemp(prefix="pegasus-bench-big-")
    try:
        measure(folder, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def measure(folder: str, args) -> None:
    queue = os.path.join(folder, "queue.yaml")
    start = time.perf_counter()
    entries = write_queue(queue, args.mb)
    size = os.path.getsize(queue)
    print(f"queue.yaml: {size / 1e6:.1f} MB, {entries} entries "
          f"(written in {time.perf_counter() - start:.1f} s)")
    pristine = os.path.join(folder, "pristine.yaml")
    shutil.copyfile(queue, pristine)
    _, idle = in_child("idle", queue)
    print(f"idle: a process that imports Pegasus: {idle:.0f} MB")
    for kind, what in (("check", "check"), ("templates", "check with templates")):
        out, peak = in_child(kind, queue)
        seconds, n, jobs = out.split()
        print(f"{what}: {float(seconds):.2f} s for {n} entries ({jobs} jobs), "
              f"peak RSS {peak:.0f} MB (+{peak - idle:.0f} MB)")
    out, peak = in_child("take", queue, args.takes)
    times = [float(t) for t in out.split()]
    median = times[len(times) // 2]
    print(f"take: median {median * 1000:.1f} ms ({1 / median:.1f} takes/s), fastest "
          f"{times[0] * 1000:.1f} ms, slowest {times[-1] * 1000:.1f} ms over "
          f"{len(times)}; peak RSS {peak:.0f} MB (+{peak - idle:.0f} MB)")
    if args.skip_run:
        return
    run_folder = os.path.join(folder, "run")
    os.mkdir(run_folder)
    os.replace(pristine, os.path.join(run_folder, "queue.yaml"))
    first_at, done, peak, first = run_pegasus(run_folder, args.seconds)
    print(f"pegasus q: first job output after {first_at:.2f} s ({first!r}); "
          f"{done} more jobs in {args.seconds:.0f} s ({done / args.seconds:.1f} jobs/s); "
          f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
