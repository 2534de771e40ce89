"""Job logs: each job's output in its own file, and ``joblog.tsv``, a row a job.

``<log dir>/<id>.log`` gets a job's stdout and stderr as they arrive, raw
(no prefixes, no colours, every ``\\r`` update kept), one unbuffered write a
chunk, so a running job's log grows and a crash leaves it as far as it got.
In queue mode the file is created at the job's first output: a job that
prints nothing has none (creating a file cost 0.45 ms of CPU here and made the take's next
fsync 0.7 ms longer: most of what logs cost a silent job; docs/performance.md).
Broadcast runs one job on every sub-node: ``<id>.<sub-node>.log`` each.
When a job ends, its row is appended to ``<log dir>/joblog.tsv`` (one write,
``O_APPEND``): that row is how ``pegasus log -f`` knows the job ended. A
retried job (``retries:``) has a row per attempt, the failed attempts'
outcome ``retried``, and one log: each attempt after the first begins
with a line ``=== attempt 2 on [sub-node] ===``.

Logs are a convenience beside the queue's records: a write that fails (a
full disk) is said once a run, that job's log stops there, and the run goes
on. Writes are small and to a local file, so they never hold the loop long.
"""

from __future__ import annotations

import errno
import os
import re
import time
from typing import Callable, Optional

from pegasus.errors import StorageError
from pegasus.model import SIGNALS, Outcome, Result, SubNode

JOBLOG = "joblog.tsv"
COLUMNS = ("job_id", "sub_node", "slots", "start", "runtime", "exit_status", "signal",
           "outcome", "command")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,-]+")
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def default_folder(queue_path: str) -> str:
    return os.path.join(os.path.dirname(queue_path), "logs")


def log_path(folder: str, job_id: int, node: Optional[SubNode] = None) -> str:
    """``<id>.log``, or ``<id>.<sub-node label, file-name safe>.log`` (broadcast)."""
    if node is None:
        return os.path.join(folder, f"{job_id}.log")
    name = _UNSAFE.sub("_", node.label.strip("[]")).strip("_")
    return os.path.join(folder, f"{job_id}.{name}.log")


def escape(command: str) -> str:
    """A command in one TSV field: backslash, tab, newline and CR escaped."""
    return command.translate(_ESCAPES)


class JobLogs:
    """A run's log folder; ``warn`` says (once) that a write failed."""

    def __init__(self, folder: str, warn: Callable[[str], None], per_node: bool = False):
        self.folder, self.warn, self.per_node = folder, warn, per_node
        self.warned = False
        self.joblog: Optional[int] = None  # joblog.tsv, opened at the first row
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        except OSError as err:
            raise StorageError(f"{folder}: cannot create the job log folder: "
                               f"{err.strerror}; give another with --log-dir, or "
                               "--no-logs") from None

    def start(self, job_id: Optional[int], node: SubNode) -> "JobLog":
        """The log of a job starting now on ``node``."""
        if job_id is None:
            return JobLog("", self)
        path = log_path(self.folder, job_id, node if self.per_node else None)
        log = JobLog(path, self, time.time())
        if self.per_node:  # broadcast: a file each, so ``log -f`` knows how many rows to wait for
            log.open()
        return log

    def failed(self, path: str, err: OSError) -> None:
        if not self.warned:
            self.warned = True
            why = ("no space left on its device" if err.errno in (errno.ENOSPC, errno.EDQUOT)
                   else err.strerror)
            self.warn(f"cannot write the job log {path}: {why}; the job goes on, its log "
                      "stops there (said once a run)")

    def open_file(self, path: str) -> Optional[int]:
        try:
            return os.open(path, _FLAGS, 0o600)
        except OSError as err:
            self.failed(path, err)
            return None

    def row(self, fields) -> None:
        """Append one row to joblog.tsv (created with its header line), kept
        open for the run: one write a job."""
        line = ("\t".join(fields) + "\n").encode("utf-8", "surrogateescape")
        path = os.path.join(self.folder, JOBLOG)
        if self.joblog is None:
            try:
                self.joblog = os.open(path, _FLAGS | os.O_EXCL, 0o600)
                line = ("\t".join(COLUMNS) + "\n").encode() + line
            except FileExistsError:
                self.joblog = self.open_file(path)
            except OSError as err:
                return self.failed(path, err)
        if self.joblog is not None:
            _write(self.joblog, line, lambda err: self.failed(path, err))

    def close(self) -> None:
        if self.joblog is not None:
            os.close(self.joblog)
            self.joblog = None


class JobLog:
    """One job's log file, created at its first output (``path`` "": not written),
    and its joblog row."""

    def __init__(self, path: str, logs: JobLogs, started: float = 0.0):
        self.path, self.logs, self.started = path, logs, started
        self.fd: Optional[int] = None
        self.opened = not path  # the file was created (or there is none to create)

    def open(self) -> None:
        if not self.opened:
            self.opened, self.fd = True, self.logs.open_file(self.path)

    def write(self, data: bytes) -> None:
        self.open()
        if self.fd is not None and not _write(self.fd, data, self._failed):
            self.close()

    def _failed(self, err: OSError) -> None:
        self.logs.failed(self.path, err)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def end(self, result: Result) -> None:
        """The job ended: close its file and write its joblog row."""
        self.close()
        if result.job.id is None:
            return
        self.logs.row(row(result, self.started, time.time() - self.started))


class NoLog:
    """--no-logs: a job log that writes nothing."""

    def write(self, data: bytes) -> None:
        pass

    def end(self, result: Result) -> None:
        pass


def row(result: Result, start: float, runtime: float):
    """The joblog fields of a finished job."""
    status, signal = result.exit_status, ""
    if status is not None and status > 128 and status - 128 in SIGNALS:
        signal = SIGNALS[status - 128]
    return (str(result.job.id), result.node.label, ",".join(map(str, result.node.slots)),
            f"{start:.3f}", f"{runtime:.3f}", "" if status is None else str(status),
            signal, outcome_word(result, signal), escape(result.rendered))


def outcome_word(result: Result, signal: str) -> str:
    """ok, failed, killed, timed out, interrupted (outcome unknown), not started,
    or retried (an attempt that did not succeed, and the job runs again: not its end)."""
    if result.retrying:
        return "retried"
    outcome = result.outcome
    if outcome is Outcome.SUCCEEDED:
        return "ok"
    if outcome is Outcome.FAILED:
        return "killed" if signal or result.killed else "failed"
    if outcome is Outcome.TIMED_OUT:
        return "timed out"
    if outcome in (Outcome.LOST, Outcome.ORPHANED):
        return "interrupted"
    return "not started" if outcome is Outcome.NOT_STARTED else "failed"


def _write(fd: int, data: bytes, failed: Callable[[OSError], None]) -> bool:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as err:
        failed(err)
        return False
    return True
