"""The only code that touches queue.yaml and consumed.yaml.

Under an ``flock`` on a sidecar lock file (``.queue.yaml.lock``, never
deleted, so the kernel frees the lock when its holder dies) it pops jobs from
the head of the queue, writes any jobs left over from an expanded entry back
at the head in canonical form, rewrites the queue atomically (temporary file
in the same folder, fsync, rename, fsync of the folder) and appends the taken
jobs to ``consumed.yaml`` beside it.

Only the lines of the taken entries are cut out of the file, so everything
else stays byte for byte as the user wrote it, comments included. Only the
head entries are parsed, so a pop costs the same at any queue length. A
flow-style list (``[a, b]``) cannot be cut by lines: it is rewritten whole,
in block style, without its comments.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

from pegasus import expand, yamltree
from pegasus.errors import InputError, PegasusError
from pegasus.model import Job

Check = Callable[[Job], None]  # raises InputError for a job that cannot run


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
        self.lock_path = os.path.join(folder, f".{name}.lock")
        self._partial = os.path.join(folder, f".{name}.partial")
        self._wait = wait
        self._on_lock_wait = on_lock_wait

    # ------------------------------------------------------------ public

    def signature(self) -> Optional[Tuple[int, int, int]]:
        """Changes whenever the file is replaced or written (for polling)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def check_all(self, check: Check) -> Tuple[int, int]:
        """Validate every entry; return (entries, jobs). Raises InputError."""
        with self.locked():
            _, items = yamltree.read_all(self._read(), self.path)
        jobs = 0
        for number, item in enumerate(items, 1):
            for job in self._expand(item, number):
                self._check(check, job, item, number)
                jobs += 1
        return len(items), jobs

    def take(self, targets: Sequence[str], check: Check) -> Taken:
        """Pop up to len(targets) jobs; job i is recorded as run on targets[i]."""
        with self.locked():
            text = self._read()
            layout, items = yamltree.read_list(text, self.path)
            jobs, leftovers, used, error = self._pop(items, len(targets), check)
            if jobs:
                self._rewrite(text, layout, used, leftovers)
                self._append_consumed(jobs, targets)
        return Taken(tuple(jobs), error)

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

    def _rewrite(self, text, layout, used, leftovers) -> None:
        new = _cut_lines(text, layout, used, leftovers)
        if new is None:  # flow style or an odd layout: write the rest whole
            rest = [item.value for item in yamltree.read_all(text, self.path)[1]]
            rest = rest[len(used):]
            new = expand.canonical_yaml(leftovers) + expand.plain_yaml(rest)
        self._write_atomic(new)

    def _write_atomic(self, text: str) -> None:
        data = text.encode("utf-8")
        try:
            mode = _mode_of(self.path)
            _unlink_quietly(self._partial)
            fd = os.open(self._partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self._partial, self.path)
            _fsync_folder(self.folder)
        except OSError as err:
            raise _io_error(self.path, "write", err) from None

    def _append_consumed(self, jobs: Sequence[Job], targets: Sequence[str]) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        text = "".join(f"# taken {stamp} for {target}\n" + expand.canonical_yaml([job])
                       for job, target in zip(jobs, targets))
        try:
            fd = os.open(self.consumed_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                         | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            try:
                _write_all(fd, text.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            raise _io_error(self.consumed_path, "append to", err) from None

    # ------------------------------------------------------------ reading, locking

    def _read(self) -> str:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return ""
        except OSError as err:
            raise _io_error(self.path, "read", err) from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = data[:err.start].count(b"\n") + 1
            raise InputError("is not UTF-8 text (byte "
                             f"{data[err.start]:#04x}); save it as UTF-8",
                             self.path, line) from None

    def _open_lock(self) -> int:
        try:
            return os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                           | os.O_CLOEXEC, 0o666)
        except OSError as err:
            raise _io_error(self.lock_path, "open the lock file", err) from None

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
                self._wait(0.05)
                waited += 0.05


# ---------------------------------------------------------------- helpers

def _cut_lines(text: str, layout, used, leftovers) -> Optional[str]:
    """Text with the used entries' lines replaced by the leftovers, or None."""
    if not layout.block or layout.empty:
        return None
    first, last = used[0].first_line, used[-1].last_line
    starts = _line_starts(text, last + 1)
    dash = _dash_line(text, starts, first, layout.column)
    if dash is None:
        return None
    end = starts[last + 1] if last + 1 < len(starts) else len(text)
    middle = expand.canonical_yaml(leftovers, layout.column)
    return text[:starts[dash]] + middle + text[end:]


def _line_starts(text: str, upto: int) -> List[int]:
    """Offsets of the starts of lines 0..upto (fewer if the text ends first)."""
    starts = [0]
    pos = 0
    while len(starts) <= upto:
        pos = text.find("\n", pos) + 1
        if pos == 0:
            break
        starts.append(pos)
    return starts


def _dash_line(text: str, starts: List[int], line: int, column: int) -> Optional[int]:
    """The line of the '-' that opens the entry whose content starts on `line`."""
    for number in range(line, -1, -1):
        begin = starts[number]
        prefix = text[begin:begin + column + 1]
        if len(prefix) == column + 1 and prefix[-1] == "-" and not prefix[:-1].strip():
            return number
    return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _mode_of(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return 0o666


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
