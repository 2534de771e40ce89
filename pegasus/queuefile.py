"""The only code that touches queue.yaml, consumed.yaml and interrupted.yaml.

Under an ``flock`` on a sidecar lock file (``.queue.yaml.lock``, never
deleted, so the kernel frees the lock when its holder dies) it pops jobs from
the head of the queue, writes any jobs left over from an expanded entry back
at the head in canonical form, rewrites the queue atomically (temporary file
in the same folder, fsync, rename, fsync of the folder) and appends the taken
jobs to ``consumed.yaml`` beside it. Every rewrite is announced in the job
journal first (see ``journal``), so a crash at any instant loses no job.
Jobs that never started go back to the head; jobs whose outcome is unknown
go to ``interrupted.yaml``, which ``requeue`` moves back to the head.

Only the lines of the taken entries are cut out of the file, so everything
else stays byte for byte as the user wrote it, comments included. Only the
head entries are parsed, so a pop costs the same at any queue length. A
flow-style list (``[a, b]``) cannot be cut by lines: it is rewritten whole,
in block style, without its comments.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

from pegasus import expand, faults, journal as journals, yamledit, yamltree
from pegasus.errors import InputError, PegasusError
from pegasus.model import Job

Check = Callable[[Job], None]  # raises InputError for a job that cannot run
STOPPED = "Pegasus stopped while it ran; outcome unknown"


class LockWaitAborted(Exception):
    """Raised by a ``wait`` function to give up waiting for the lock."""


@dataclass(frozen=True)
class Taken:
    """What one pop took, and the error that stopped it early, if any."""

    jobs: Tuple[Job, ...]
    error: Optional[InputError] = None


def _no_wait_notice(lock_path: str) -> None:
    """Default: say nothing while waiting for the lock."""


class QueueFile:
    def __init__(self, path: str, wait: Callable[[float], None] = time.sleep,
                 on_lock_wait: Callable[[str], None] = _no_wait_notice):
        self.path = path
        folder, name = os.path.split(os.path.abspath(path))
        self.folder = folder
        self.consumed_path = os.path.join(folder, "consumed.yaml")
        self.interrupted_path = os.path.join(folder, "interrupted.yaml")
        self.lock_path = os.path.join(folder, f".{name}.lock")
        self._partial_prefix = os.path.join(folder, f".{name}.partial")
        self.wait = wait  # how to pause while the lock is held elsewhere
        self._on_lock_wait = on_lock_wait

    # ------------------------------------------------------------ public

    def signature(self) -> Optional[Tuple[int, int, int]]:
        """Changes whenever the file is replaced or written (for polling)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def check_all(self, check: Check, lock: bool = True) -> Tuple[int, int]:
        """Validate every entry; return (entries, jobs). Raises InputError.

        ``lock=False`` when the caller already holds the queue lock.
        """
        if lock:
            with self.locked():
                return self.check_all(check, lock=False)
        _, items = yamltree.read_all(self._read(), self.path)
        jobs = 0
        for number, item in enumerate(items, 1):
            for job in self._expand(item, number):
                self._check(check, job, item, number)
                jobs += 1
        return len(items), jobs

    def take(self, targets: Sequence[str], check: Check,
             journal: Optional[journals.Journal] = None, launching: bool = False) -> Taken:
        """Pop up to len(targets) jobs; job i is recorded as run on targets[i].

        ``launching``: each job is launched on its target right away, and the
        journal says so in the same record as the take (one fsync less).
        """
        with self.locked():
            text = self._read()
            layout, items = yamltree.read_list(text, self.path)
            jobs, leftovers, used, error = self._pop(items, len(targets), check)
            if jobs:
                _refuse_symlink(self.consumed_path)  # before anything changes
                jobs, announce = self._tickets(journal, jobs, targets, launching)
                self._rewrite(text, layout, used, leftovers, announce)
                faults.point("queue-rewritten")
                self._append(self.consumed_path, _records("taken", jobs, targets))
                faults.point("consumed-appended")
        return Taken(tuple(jobs), error)

    def put_back(self, jobs: Sequence[Job], journal: Optional[journals.Journal] = None) -> None:
        """Jobs that never started go back to the head of the queue."""
        tickets = [j.ticket for j in jobs]
        announce = None if journal is None else (
            lambda partial: journal.put_back(tickets, partial))
        with self.locked():
            self._insert_head([j.canonical() for j in jobs], announce)

    def add_interrupted(self, job: Job, node: str, reason: str,
                        journal: Optional[journals.Journal] = None) -> None:
        """A job whose outcome is unknown: recorded for the user to re-run."""
        with self.locked():
            self._interrupted_once(job.canonical(), node, reason)
            if journal is not None:
                journal.lost(job.ticket, node, reason)

    def open_journal(self) -> Tuple[journals.Journal, int, List[Tuple[dict, str]]]:
        """Settle what dead Pegasus processes left, then start our own journal.

        Jobs they took but never launched go back to the head of the queue;
        jobs they launched and never saw finish go to interrupted.yaml.
        Returns (our journal, jobs put back, [(entry, node)] interrupted).
        """
        with self.locked():
            put_back, interrupted = self._recover()
            return journals.Journal.create(self.path), put_back, interrupted

    def recover(self) -> Tuple[int, List[Tuple[dict, str]]]:
        """Settle dead processes' journals: (jobs put back, [(entry, node)])."""
        with self.locked():
            return self._recover()

    def _recover(self) -> Tuple[int, List[Tuple[dict, str]]]:
        put_back, interrupted = 0, []
        for orphan in journals.read_orphans(self.path, self._partial_names()):
            tickets = [ticket for ticket, _ in orphan.unlaunched]
            self._insert_head([entry for _, entry in orphan.unlaunched],
                              lambda partial: orphan.journal.put_back(tickets, partial))
            for ticket, entry, node in orphan.interrupted:
                self._interrupted_once(entry, node, STOPPED)
            orphan.journal.remove()
            put_back += len(orphan.unlaunched)
            interrupted += [(entry, node) for _, entry, node in orphan.interrupted]
        for leftover in self._partial_files():  # under the lock: all from the dead
            if os.path.isfile(leftover) and not os.path.islink(leftover):
                _unlink_quietly(leftover)
        return put_back, interrupted

    @property
    def _partial(self) -> str:
        """A new temporary file name: one per rewrite, never reused."""
        return f"{self._partial_prefix}-{secrets.token_hex(6)}"

    def _partial_files(self) -> List[str]:
        return glob.glob(glob.escape(self._partial_prefix) + "-*")

    def _partial_names(self) -> set:
        """Temporary files a dead Pegasus wrote and never renamed."""
        return {os.path.basename(path) for path in self._partial_files()}

    def _interrupted_once(self, entry: dict, node: str, reason: str) -> None:
        """Append to interrupted.yaml unless this entry on this node is there.

        A crash between recording a job here and journaling it leaves it to
        the next recovery, which must not list it twice.
        """
        body = expand.entries_yaml([entry])
        text = self._read_file(self.interrupted_path)
        start = text.find(body)
        while start >= 0:
            header = text[:start].rstrip("\n").rpartition("\n")[2]
            after = text[start + len(body):]
            if (header.startswith("# interrupted ") and f" for {node}: " in header
                    and (not after or after.startswith("#"))):
                return
            start = text.find(body, start + 1)
        self._append(self.interrupted_path, _entry_record("interrupted", entry, node, reason))

    # ------------------------------------------------------------ lock mode

    def snapshot(self) -> Tuple[Optional[bytes], Optional[int]]:
        """The queue's bytes and mode (None, None without a file). Hold the lock."""
        try:
            with open(self.path, "rb") as f:
                return f.read(), os.fstat(f.fileno()).st_mode & 0o7777
        except FileNotFoundError:
            return None, None
        except OSError as err:
            raise _io_error(self.path, "read", err) from None

    def undo_edit(self, before: Optional[bytes], mode: Optional[int]) -> str:
        """Keep the edited queue as ``<queue>.rejected``, put ``before`` back.

        For lock mode, which holds the lock. Returns the rejected file's path.
        """
        rejected = self.path + ".rejected"
        edited, _ = self.snapshot()
        self._write_atomic(rejected, edited or b"")
        if before is None:
            _unlink_quietly(self.path)
        else:
            self._write_atomic(self.path, before, mode=mode)
        return rejected

    def requeue(self) -> int:
        """Move the entries of interrupted.yaml to the head of the queue."""
        with self.locked():
            self._recover()
            text = self._read_file(self.interrupted_path)
            _, items = yamltree.read_all(text, self.interrupted_path)
            if items:
                self._insert_head([item.value for item in items])
                self._write_atomic(self.interrupted_path, "")
        return len(items)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the queue lock (waits, politely, while someone else has it)."""
        fd = self._open_lock()
        try:
            self._acquire(fd)
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------ popping

    def _pop(self, items, want: int, check: Check):
        jobs: List[Job] = []
        used: List[yamltree.Item] = []
        leftovers: List[Job] = []
        try:
            for number, item in enumerate(items, 1):
                expanded = self._expand(item, number)
                for job in expanded:
                    self._check(check, job, item, number)
                room = want - len(jobs)
                jobs.extend(expanded[:room])
                leftovers = expanded[room:]
                used.append(item)
                if len(jobs) == want:
                    break
        except InputError as err:
            if not jobs:
                raise
            return jobs, leftovers, used, err
        return jobs, leftovers, used, None

    def _expand(self, item, number: int) -> List[Job]:
        line = yamltree.entry_line(item)
        try:
            return expand.expand_entry(item.value, line)
        except InputError as err:
            raise err.at(self.path, line, number) from None

    def _check(self, check: Check, job: Job, item, number: int) -> None:
        try:
            check(job)
        except InputError as err:
            raise err.at(self.path, yamltree.entry_line(item), number) from None

    # ------------------------------------------------------------ writing

    def _tickets(self, journal, jobs: List[Job], targets, launching: bool):
        """The jobs with journal tickets, and how to announce their taking."""
        if journal is None:
            return jobs, None
        jobs = [replace(job, ticket=journal.new_ticket()) for job in jobs]

        def announce(partial: str) -> None:
            journal.taken([(j.ticket, j.canonical(), t) for j, t in zip(jobs, targets)],
                          partial, launched=launching)
            faults.point("taken-journaled")
        return jobs, announce

    def _rewrite(self, text, layout, used, leftovers, announce=None) -> None:
        middle = expand.canonical_yaml(leftovers, layout.column)
        new = yamledit.replace_head(text, layout, used[0].first_line, used[-1].last_line,
                                    middle)
        if new is None:  # flow style or an odd layout: write the rest whole
            rest = [item.value for item in yamltree.read_all(text, self.path)[1]]
            new = expand.canonical_yaml(leftovers) + expand.entries_yaml(rest[len(used):])
        self._write_atomic(self.path, new, announce)

    def _insert_head(self, entries: Sequence[dict], announce=None) -> None:
        if not entries:
            return
        text = self._read()
        layout, items = yamltree.read_list(text, self.path)
        first = next(items, None)
        new = yamledit.insert_head(text, layout, first and first.first_line,
                                   expand.entries_yaml(entries, layout.column))
        if new is None:
            rest = [item.value for item in yamltree.read_all(text, self.path)[1]]
            new = expand.entries_yaml(entries) + expand.entries_yaml(rest)
        self._write_atomic(self.path, new, announce)

    def _write_atomic(self, path: str, text, announce=None,
                      mode: Optional[int] = None) -> None:
        """Temporary file, fsync, ``announce(its name)``, rename, fsync folder.

        The file keeps its mode (or gets ``mode``); a new one follows the umask.
        """
        data = text.encode("utf-8") if isinstance(text, str) else text
        try:
            mode = _mode_of(path) if mode is None else mode
            partial = self._partial
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666 if mode is None else mode)
            try:
                if mode is not None:
                    os.fchmod(fd, mode)  # the old file's mode, whatever the umask
                _write_all(fd, data)
                os.fsync(fd)
                if announce is not None:
                    announce(os.path.basename(partial))
            finally:
                os.close(fd)
            os.replace(partial, path)
            _fsync_folder(self.folder)
        except OSError as err:
            where = err.filename if str(err.filename).startswith(self._partial_prefix) else path
            raise _io_error(where, "write", err) from None

    def _append(self, path: str, text: str) -> None:
        """One write at the end (O_APPEND: concurrent writers never interleave)."""
        if not text:
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                         | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            try:
                _write_all(fd, text.encode("utf-8"))
            finally:
                os.close(fd)
        except OSError as err:
            raise _io_error(path, "append to", err) from None

    # ------------------------------------------------------------ reading, locking

    def _read(self) -> str:
        return self._read_file(self.path)

    def _read_file(self, path: str) -> str:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return ""
        except OSError as err:
            raise _io_error(path, "read", err) from None
        return yamltree.decode(data, path)

    def _open_lock(self) -> int:
        try:
            return os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                           | os.O_CLOEXEC, 0o666)
        except OSError as err:
            raise _io_error(self.lock_path, "open", err) from None

    def _acquire(self, fd: int) -> None:
        waited, told = 0.0, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if waited >= 1.0 and not told:
                    self._on_lock_wait(self.lock_path)
                    told = True
                self.wait(0.05)  # may raise LockWaitAborted
                waited += 0.05


# ---------------------------------------------------------------- helpers

def _records(what: str, jobs: Sequence[Job], targets: Sequence[str], why: str = "") -> str:
    return "".join(_entry_record(what, job.canonical(), target, why)
                   for job, target in zip(jobs, targets))


def _entry_record(what: str, entry: dict, target: str, why: str = "") -> str:
    """``# taken <time> for [node]`` (plus ``: why``) and the canonical entry."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    why = f": {why}" if why else ""
    return f"# {what} {stamp} for {target}{why}\n" + expand.entries_yaml([entry])


def _refuse_symlink(path: str) -> None:
    """Pegasus never writes through a symbolic link planted where it writes."""
    if os.path.islink(path):
        raise PegasusError(f"{path}: is a symbolic link; Pegasus does not write through "
                           "links: remove it or replace it by a plain file")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _mode_of(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return None


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _io_error(path: str, action: str, err: OSError) -> PegasusError:
    if err.errno == errno.EISDIR:
        return InputError("is a directory, not a file; give the path of a YAML file", path)
    return PegasusError(f"{path}: cannot {action} it: {err.strerror}; check the "
                        "path and its permissions")
