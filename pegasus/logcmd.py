"""``pegasus log ID``: print a job's log; ``-f``: follow it until the job ends.

A job that printed nothing has no log file: its log is empty once
``joblog.tsv`` has its row, or while the Pegasus running it says so
(``control``). A job has ended when ``joblog.tsv`` has its row (broadcast:
a row for each sub-node's log). A follower also stops when no Pegasus runs on the queue any
more (no journal of it is locked: ``/proc/locks``), since then no row will
come: that job was stopped mid-way (a crash, ``kill -9``).
"""

from __future__ import annotations

import glob
import os
import re
import time
from typing import Dict, List, Optional

from pegasus import control, journal
from pegasus.errors import ControlError, ExitStatus, InputError
from pegasus.outlet import write_now
from pegasus.joblogs import JOBLOG
from pegasus.options import Options

POLL = 0.2  # seconds between looks at a followed log


def run(opts: Options, out) -> ExitStatus:
    folder = opts.log_dir or os.path.join(os.path.dirname(opts.queue_file), "logs")
    job_id = opts.job_id
    paths = log_files(folder, job_id)
    follower = Follower(folder, job_id, out)
    if not paths and not follower.ended() and not running_now(opts.queue_file, job_id):
        raise InputError(f"{folder}: no log of job {job_id} (no such job has started, or "
                         "it ran with --no-logs or another --log-dir)")
    if not opts.follow:
        follower.copy(paths)
        return ExitStatus.OK
    return follower.follow(opts.queue_file)


def running_now(queue_path: str, job_id: int) -> bool:
    """Whether a Pegasus runs the job now (it has printed nothing yet: no file)."""
    try:
        return any(job["id"] == job_id for _, answer in control.ask_all(
            queue_path, {"request": "status"}) for job in answer.get("running", ()))
    except ControlError:
        return False


def log_files(folder: str, job_id: int) -> List[str]:
    """``<id>.log``, or broadcast's ``<id>.<sub-node>.log`` files."""
    one = os.path.join(folder, f"{job_id}.log")
    if os.path.exists(one):
        return [one]
    return sorted(glob.glob(os.path.join(glob.escape(folder), f"{job_id}.*.log")),
                  key=_natural)


def _natural(path: str) -> list:
    """node-2 before node-10: digit runs compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", path)]


class Follower:
    """Copies the new bytes of a job's log files to ``out``, with ``==> file <==``
    headers when there are several (broadcast)."""

    def __init__(self, folder: str, job_id: int, out):
        self.folder, self.job_id, self.out = folder, job_id, out
        self.done: Dict[str, int] = {}  # path -> bytes copied
        self.current: Optional[str] = None
        self.rows: List[List[str]] = []  # this job's joblog rows
        self.joblog_at = 0

    def follow(self, queue_path: str) -> ExitStatus:
        while True:
            alive = pegasus_running(queue_path)  # first: a row written meanwhile is read
            ended = self.ended()
            self.copy(log_files(self.folder, self.job_id))
            if ended:
                ok = all(row[7] == "ok" for row in _ends(self.rows) if len(row) > 7)
                return ExitStatus.OK if ok else ExitStatus.JOB_FAILED
            if not alive:
                raise InputError(f"job {self.job_id}'s log ends here: no Pegasus runs on "
                                 f"{queue_path} and {JOBLOG} has no row for the job (it "
                                 "was stopped mid-way; see interrupted.yaml)")
            time.sleep(POLL)

    def ended(self) -> bool:
        """Whether joblog.tsv has a row for each of the job's log files."""
        path = os.path.join(self.folder, JOBLOG)
        try:
            with open(path, "rb") as f:
                f.seek(self.joblog_at)
                data = f.read()
        except FileNotFoundError:
            return False
        complete = data[:data.rfind(b"\n") + 1]  # a row being written is read next time
        self.joblog_at += len(complete)
        key = f"{self.job_id}\t".encode()
        self.rows += [line.decode("utf-8", "replace").split("\t")
                      for line in complete.splitlines() if line.startswith(key)]
        ends = _ends(self.rows)
        return bool(ends) and len(ends) >= len(log_files(self.folder, self.job_id))

    def copy(self, paths: List[str]) -> None:
        for path in paths:
            with open(path, "rb") as f:
                f.seek(self.done.get(path, 0))
                data = f.read()
            if data:
                self.done[path] = self.done.get(path, 0) + len(data)
                self._write(self._header(path) + data)

    def _header(self, path: str) -> bytes:
        name = os.path.basename(path)
        if path == self.current or name == f"{self.job_id}.log":
            return b""
        self.current = path
        return f"==> {name} <==\n".encode()

    def _write(self, data: bytes) -> None:
        write_now(self.out, data)


def pegasus_running(queue_path: str) -> bool:
    """Whether a Pegasus holds the lock of a journal of this queue (Linux's
    /proc/locks, read without taking a lock that could confuse a recovery)."""
    inodes = set()
    for path in journal.journal_paths(queue_path):
        try:
            inodes.add(os.stat(path).st_ino)
        except OSError:
            continue
    if not inodes:
        return False
    try:
        with open("/proc/locks") as f:
            locks = f.read().splitlines()
    except OSError:
        return True  # cannot tell: keep following
    held = set()
    for line in locks:
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK":
            held.add(int(fields[5].rsplit(":", 1)[-1]))
    return bool(inodes & held)


def _ends(rows: List[List[str]]) -> List[List[str]]:
    """The rows of a job's ends: not those of attempts that were retried."""
    return [row for row in rows if len(row) <= 7 or row[7] != "retried"]
