"""The queue file: lock it, pop jobs from its head, rewrite it atomically.

Under an ``flock`` on a sidecar lock file (``.queue.yaml.lock``, never
deleted, so the kernel frees the lock when its holder dies) ``pop`` parses
only the head entries and ``cut`` writes the file again without the entries
taken (any jobs left over from an expanded entry go back at the head in
canonical form); ``insert_head`` puts entries back at the head. Every
rewrite is atomic (temporary file in the same folder, fsync, rename, fsync of
the folder) and is announced, with its temporary file's name, before the
rename: that is how the journal knows which rewrites happened (see
``records``, which owns the protocol, and ``journal``).

Only the lines of the taken entries are cut out of the file, so everything
else stays byte for byte as the user wrote it, comments included. A pop
reads and parses only the head of the file, and a rewrite copies the rest in
chunks, so memory does not grow with the queue (the copy's time does). The
check at start reads the file a chunk at a time. A flow-style list
(``[a, b]``) cannot be cut by lines: it is rewritten whole, in block style,
without its comments.

A take takes only whole entries (``atrest``: a writer without the lock may
be half-way through the last one); rewrites keep the file's modification
time, which says when a writer last wrote.

A queue file with several names (hard links) is refused: a rewrite gives the
name Pegasus uses a new file, the other names keep the old one, and a Pegasus
started through another name would run the same entries again.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import io
import os
import secrets
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import (BinaryIO, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple,
                    Union)

from pegasus import atrest, expand, yamledit, yamltree
from pegasus.diskio import NotWritten, fsync_folder, unlink_quietly, write_all
from pegasus.errors import InputError, PegasusError, StorageError
from pegasus.model import Job

Check = Callable[[Job], None]  # raises InputError for a job that cannot run
Place = Callable[[Job], Optional[str]]  # where a job would run (a label), None: it waits
Announce = Callable[[str], None]  # told a rewrite's temporary file name before its rename
Data = Union[str, bytes, Callable[[int], None]]  # what write_atomic writes (or how)
COPY_CHUNK = 1024 * 1024  # the rest of the file is copied this much at a time
# copy_file_range refused by this kernel, filesystem or sandbox (not a failed write)
_NO_COPY_FILE_RANGE = {errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP,
                       errno.EPERM, errno.EBADF}


class LockWaitAborted(Exception):
    """Raised by a ``wait`` function to give up waiting for the lock."""


@dataclass(frozen=True)
class Popped:
    """The jobs found at the head (not yet cut), and what cutting needs."""

    jobs: Tuple[Job, ...]
    error: Optional[InputError]  # the bad entry that stopped the pop early
    head: str  # the file's text up to the end of the last used entry's lines, at least
    layout: yamltree.Layout
    used: Tuple[yamltree.Item, ...]  # the entries the jobs come from
    leftovers: Tuple[Job, ...]  # jobs of the last used entry not taken
    places: Tuple[str, ...] = ()  # where each job runs, as ``place`` said
    waiting: bool = False  # stopped at a job that has no place yet (no free slots)
    pending: bool = False  # the file's last entry (or an error) waits for the file to rest


def _no_wait_notice(lock_path: str) -> None:
    """Default: say nothing while waiting for the lock."""


RECORD_FILES = ("consumed.yaml", "interrupted.yaml", "failed.yaml")  # beside the queue


class QueueFile:
    """One queue file and its lock; paths of the files kept beside it.

    A queue file that is a symbolic link is its target: ``path`` and every
    file kept beside it are in the target's folder.
    """

    def __init__(self, path: str, wait: Callable[[float], None] = time.sleep,
                 on_lock_wait: Callable[[str], None] = _no_wait_notice,
                 pause: Callable[[float], None] = time.sleep):
        # A link is followed once, here: lock, journal, temporary files and
        # rewrites all use the target's folder (a rename would replace the link).
        self.path = os.path.realpath(path) if os.path.islink(path) else path
        folder, name = os.path.split(os.path.abspath(self.path))
        self.folder = folder
        self.consumed_path, self.interrupted_path, self.failed_path = (  # the user's records
            os.path.join(folder, record) for record in RECORD_FILES)
        self.lock_path = os.path.join(folder, f".{name}.lock")
        self._partial_prefix = os.path.join(folder, f".{name}.partial")
        self._wait = wait  # how a take pauses while the lock is held elsewhere (may raise)
        self._pause = pause  # how a record's write pauses for the lock (never gives up)
        self._lock = FileLock(self.lock_path, on_lock_wait)
        # interrupted.yaml's and failed.yaml's own lock: a run records a job there
        # while lock mode holds the queue's; requeue and recovery take both, in order
        self._records_lock = FileLock(os.path.join(folder, f".{name}.records.lock"),
                                      on_lock_wait)
        self.rest = atrest.Rest(self.path)  # whether the last entry is whole

    def signature(self) -> Optional[atrest.Signature]:
        """Changes whenever the file is replaced or written (for polling)."""
        return atrest.signature(_stat(self.path))

    def check_all(self, check: Check, lock: bool = True,
                  text_of: Optional[str] = None) -> Tuple[int, int]:
        """Validate every entry; return (entries, jobs). Raises InputError.
        ``lock=False``: the caller holds the lock. ``text_of``: check that
        file as this queue (lock mode's copy); messages name the queue."""
        if lock:
            with self.locked():
                return self.check_all(check, lock=False, text_of=text_of)
        entries = jobs = 0  # counted as they go: memory stays that of one entry
        for entries, expanded in enumerate(checked_entries(self, check, text_of), 1):
            jobs += len(expanded)
        return entries, jobs

    # ------------------------------------------------------------ popping (hold the lock)

    def pop(self, want: int, check: Check, place: Place = lambda job: "") -> Popped:
        """Up to ``want`` checked jobs from the head; the file is not changed.

        The first job ``place`` has no place for, or a bad entry, ends the pop
        (the error is returned; raised if it is the very first job). Only whole
        entries are taken; an error found while the file is not at rest (a
        writer may be half-way through) waits for it: ``pending``.
        """
        with _stream(self.path, keep=True) as (stream, f):
            refuse_hard_links(self.path, _fstat(f))
            at_rest = lambda: self.rest.at_rest(_fstat(f))  # noqa: E731 - once read to the end
            try:
                layout, items = yamltree.read_list(stream, self.path)
                whole = atrest.Whole(items, at_rest)
                jobs, places, used, leftovers, error, waiting = _take_jobs(
                    whole, want, lambda item, n: _checked(self.path, item, n, check), place)
            except InputError:
                if at_rest():
                    raise
                return Popped((), None, "", yamltree.Layout(True, 0, True), (), (), pending=True)
            pending = whole.held_back or (error is not None and not at_rest())
            if pending:
                error = None
            if used:
                stream.read_through_line(used[-1].last_line)
            head = stream.head()
        return Popped(jobs, error, head, layout, used, leftovers, places, waiting, pending)

    def cut(self, popped: Popped, announce: Optional[Announce] = None) -> None:
        """Rewrite the file without the popped entries (leftovers stay at the head)."""
        head, layout, used = popped.head, popped.layout, popped.used
        middle = expand.canonical_yaml(list(popped.leftovers), layout.column)
        new = yamledit.replace_head(head, layout, used[0].first_line, used[-1].last_line,
                                    middle)
        if new is not None:
            self._replace_head(head, new, announce)
        else:  # flow style or an odd layout: write the rest whole
            self.write_atomic(self.path, _cut_whole(self.read(), self.path, popped),
                              announce)

    def insert_head(self, entries: Sequence[dict], announce: Optional[Announce] = None) -> None:
        """Put entries (canonical form) before the first entry."""
        if not entries:
            return
        head, layout, first = _first_entry(self.path)
        middle = expand.entries_yaml(entries, layout.column)
        new = first and yamledit.insert_head(head, layout, first.first_line, middle)
        if new:
            self._replace_head(head, new, announce)
        else:  # no entry (the file is only comments: small) or a flow-style list
            self.write_atomic(self.path, _inserted_whole(self.read(), self.path, entries,
                                                         middle), announce)

    def _replace_head(self, old: str, new: str, announce: Optional[Announce]) -> None:
        """Rewrite the file as ``new`` + what follows ``old``, its head, in chunks."""
        head = new.encode("utf-8")
        copied: List[Tuple[os.stat_result, os.stat_result]] = []  # (old, new) as copied
        with _rest_after(self.path, old.encode("utf-8")) as rest:
            self.write_atomic(self.path,
                              lambda fd: copied.append(_write_head_copy_rest(fd, head, rest)),
                              announce)
            # A writer that appends without the lock (``echo - x >> queue.yaml``) may
            # have written to the old file after the copy: carry that over too.
            late = rest.read()
            if late:
                append(self.path, late)
            else:  # the new file holds nothing a writer wrote that the old did not
                self.rest.rewritten(*copied[0])

    # ------------------------------------------------------------ files

    def write_atomic(self, path: str, text: Data, announce: Optional[Announce] = None,
                     mode: Optional[int] = None) -> None:
        """Temporary file, fsync, ``announce(its name)``, rename, fsync folder.

        ``text``: a str, bytes, or a function that writes to the file's
        descriptor. The file keeps its mode (or gets ``mode``); a new one
        follows the umask.
        """
        write = text if callable(text) else _writer(text)
        partial, announced = None, False
        try:
            mode = _mode_of(path) if mode is None else mode
            partial = self.new_partial()
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666 if mode is None else mode)
            try:
                if mode is not None:
                    os.fchmod(fd, mode)  # the old file's mode, whatever the umask
                write(fd)
                os.fsync(fd)
                if announce is not None:
                    announced = True
                    announce(os.path.basename(partial))
            finally:
                os.close(fd)
            os.replace(partial, path)
            fsync_folder(self.folder)
        except OSError as err:
            # Nobody relies on it (its announcement, if any, was taken back): tidy up.
            if partial is not None and (not announced or isinstance(err, NotWritten)):
                unlink_quietly(partial)
            where = err.filename if (isinstance(err, NotWritten) or str(err.filename)
                                     .startswith(self._partial_prefix)) else path
            raise _io_error(where, "write", err) from None

    def new_partial(self) -> str:
        """A new temporary file name: one per rewrite, never reused."""
        return f"{self._partial_prefix}-{secrets.token_hex(6)}"

    def partial_files(self) -> List[str]:
        """Temporary files lying there (under the lock: a dead Pegasus's)."""
        return glob.glob(glob.escape(self._partial_prefix) + "-*")

    def partial_names(self) -> set:
        return {os.path.basename(path) for path in self.partial_files()}

    def remove_partial_files(self) -> None:
        for leftover in self.partial_files():
            if os.path.isfile(leftover) and not os.path.islink(leftover):
                unlink_quietly(leftover)

    def read(self) -> str:
        return read_text(self.path)

    def locked(self, give_way: bool = False):
        """Hold the queue lock (waits while someone else has it); ``give_way``: a
        take's wait, which may end in LockWaitAborted (a record's never does)."""
        return self._lock.held(self._wait if give_way else self._pause)

    def records_locked(self):
        """Hold the lock of interrupted.yaml and failed.yaml (never gives up). A
        holder of both takes the queue's first."""
        return self._records_lock.held(self._pause)


class FileLock:
    """An flock on a file beside the queue, waited for in steps of 0.05 s."""

    def __init__(self, path: str, on_wait: Callable[[str], None]):
        self.path, self.on_wait = path, on_wait
        self.told = False  # "waiting for the lock" said, not got yet

    @contextmanager
    def held(self, wait: Callable[[float], None]) -> Iterator[None]:
        fd = self._open()
        try:
            self._acquire(fd, wait)
            yield
        finally:
            os.close(fd)

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                           | os.O_CLOEXEC, 0o666)
        except OSError as err:
            raise _io_error(self.path, "open", err) from None

    def _acquire(self, fd: int, wait: Callable[[float], None]) -> None:
        waited = 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.told = False
                return
            except BlockingIOError:
                if waited >= 1.0 and not self.told:
                    self.on_wait(self.path)
                    self.told = True  # once a wait, across aborted tries
                wait(0.05)  # a take's may raise LockWaitAborted
                waited += 0.05


# ---------------------------------------------------------------- files beside the queue

def read_text(path: str) -> str:
    """A UTF-8 YAML file's text, "" when it does not exist."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return ""
    except OSError as err:
        raise _io_error(path, "read", err) from None
    return yamltree.decode(data, path)


def snapshot(path: str) -> Tuple[Optional[bytes], Optional[int]]:
    """A file's bytes and mode (None, None without a file)."""
    try:
        with open(path, "rb") as f:
            return f.read(), os.fstat(f.fileno()).st_mode & 0o7777
    except FileNotFoundError:
        return None, None
    except OSError as err:
        raise _io_error(path, "read", err) from None


def append(path: str, text: Union[str, bytes]) -> None:
    """One write at the end (O_APPEND: concurrent writers never interleave).

    A write cut short (a full disk) is taken back: the file ends where it did,
    never in the middle of an entry that the next append would run into."""
    if not text:
        return
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                     | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        try:
            end = os.fstat(fd).st_size
            try:
                write_all(fd, data)
            except OSError:
                _take_back(fd, end, len(data))
                raise
        finally:
            os.close(fd)
    except OSError as err:
        raise _io_error(path, "append to", err) from None


def _take_back(fd: int, end: int, length: int) -> None:
    """Truncate a partial append (the file is between ``end`` and a whole one)."""
    try:
        if end < os.fstat(fd).st_size < end + length:
            os.ftruncate(fd, end)
    except OSError:
        pass  # the error being raised says the file needs a look


def checked_entries(queue: QueueFile, check: Check,
                    text_of: Optional[str] = None) -> Iterator[List[Job]]:
    """Each entry's checked jobs in file order, read a chunk at a time; InputError
    at the first bad entry. Takes no lock (``check_all`` does). The queue read
    to its end (not a copy) is whole: the user started Pegasus on it."""
    with _stream(text_of or queue.path, shown=queue.path) as (stream, f):
        for number, item in enumerate(yamltree.read_list(stream, queue.path)[1], 1):
            yield _checked(queue.path, item, number, check)
        if text_of is None:
            queue.rest.saw_whole(_fstat(f))


def replace_edited(queue: QueueFile, edited: bytes, before: Optional[bytes]) -> Optional[bytes]:
    """Lock mode's save: the file becomes ``edited`` plus what was appended
    to it (``>>``, without the lock) since it held ``before``. Under the lock.

    Returns what was appended (b"" for nothing); None, and nothing written,
    when the file was changed in another way.
    """
    base = before or b""
    try:
        f: BinaryIO = open(queue.path, "rb")
    except FileNotFoundError:
        f = io.BytesIO()
    except OSError as err:
        raise _io_error(queue.path, "read", err) from None
    with f:
        current = f.read()
        if not current.startswith(base):
            return None
        appended = current[len(base):]
        if edited == base:  # no edit: the file is as it should be
            return appended
        if appended and edited and not edited.endswith(b"\n"):
            edited += b"\n"
        queue.write_atomic(queue.path, edited + appended)
        late = f.read()  # appended while the new file was written
        if late:
            append(queue.path, late)
    return appended + late


def refuse_hard_links(path: str, st: Optional[os.stat_result] = None) -> None:
    """A queue file with more than one name cannot be taken from safely."""
    st = _stat(path) if st is None else st
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        raise PegasusError(
            f"{path}: this file has {st.st_nlink} names (hard links). Pegasus replaces "
            "the file when it takes entries, so the other names would keep the old "
            "entries and a Pegasus started through one of them would run them again. "
            f"Keep one name (find the others with `find / -samefile {path}`) and make "
            "the others symbolic links (`ln -s`)")


def refuse_symlink(path: str) -> None:
    """Pegasus never writes through a symbolic link planted where it writes."""
    if os.path.islink(path):
        raise PegasusError(f"{path}: is a symbolic link; Pegasus does not write through "
                           "links: remove it or replace it by a plain file")


# ---------------------------------------------------------------- the head and the rest

def _checked(path: str, item: yamltree.Item, number: int, check: Check) -> List[Job]:
    """The entry's jobs, each checked; InputError naming the entry."""
    line = yamltree.entry_line(item)
    try:
        expanded = expand.expand_entry(item.value, line)
        for job in expanded:
            check(job)
    except InputError as err:
        raise err.at(path, line, number) from None
    return expanded


def _take_jobs(items: Iterable[yamltree.Item], want: int,
               checked: Callable[[yamltree.Item, int], List[Job]], place: Place):
    """(jobs, their places, entries used, jobs of the last one left over, the
    error that stopped it, whether it stopped at a job with no place yet)."""
    jobs: List[Job] = []
    places: List[str] = []
    used: List[yamltree.Item] = []
    leftovers: List[Job] = []
    if want < 1:
        return (), (), (), (), None, False
    try:
        for number, item in enumerate(items, 1):
            expanded = checked(item, number)
            fitting = _placed(expanded[:want - len(jobs)], place, places)
            if not fitting:
                return tuple(jobs), tuple(places), tuple(used), tuple(leftovers), None, True
            jobs.extend(fitting)
            leftovers = expanded[len(fitting):]
            used.append(item)
            if len(jobs) == want or leftovers:
                break
    except InputError as err:
        if not jobs:
            raise
        return tuple(jobs), tuple(places), tuple(used), tuple(leftovers), err, False
    waiting = bool(leftovers) and len(jobs) < want
    return tuple(jobs), tuple(places), tuple(used), tuple(leftovers), None, waiting


def _placed(jobs: Sequence[Job], place: Place, places: List[str]) -> List[Job]:
    """The first jobs that ``place`` finds a place for (their places appended)."""
    for count, job in enumerate(jobs):
        where = place(job)
        if where is None:
            return list(jobs[:count])
        places.append(where)
    return list(jobs)


@contextmanager
def _stream(path: str, keep: bool = False, shown: Optional[str] = None
            ) -> Iterator[Tuple[yamltree.TextStream, BinaryIO]]:
    """The file for the YAML reader, a chunk at a time (no file: no text), and
    the file itself. ``shown``: the path its messages name (default ``path``)."""
    try:
        f: BinaryIO = open(path, "rb")
    except FileNotFoundError:
        f = io.BytesIO()
    except OSError as err:
        raise _io_error(path, "read", err) from None
    with f:
        try:
            yield yamltree.TextStream(f, shown or path, keep), f
        except OSError as err:  # a read that failed half-way
            raise _io_error(path, "read", err) from None


def _first_entry(path: str) -> Tuple[str, yamltree.Layout, Optional[yamltree.Item]]:
    """The head of the file through its first entry's first line, and that entry."""
    with _stream(path, keep=True) as (stream, _):
        layout, items = yamltree.read_list(stream, path)
        first = next(items, None)
        if first is not None:
            stream.read_through_line(first.first_line)
        return stream.head(), layout, first


@contextmanager
def _rest_after(path: str, head: bytes) -> Iterator[BinaryIO]:
    """The file, positioned after ``head``, which it must still start with."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise _changed(path) from None
    except OSError as err:
        raise _io_error(path, "read", err) from None
    with f:
        if _read_prefix(f, len(head), path) != head:
            raise _changed(path)
        yield f


def _changed(path: str) -> PegasusError:
    return PegasusError(f"{path}: changed while Pegasus was rewriting it, by a program "
                        "that does not take its lock; Pegasus left it as that program "
                        "wrote it. To edit the queue while Pegasus runs, use `pegasus l`")


def _cut_whole(text: str, path: str, popped: Popped) -> str:
    """The whole new text without the popped entries (a flow-style list)."""
    rest = [item.value for item in yamltree.read_all(text, path)[1]]
    return (expand.canonical_yaml(list(popped.leftovers))
            + expand.entries_yaml(rest[len(popped.used):]))


def _inserted_whole(text: str, path: str, entries: Sequence[dict], middle: str) -> str:
    """The whole new text with ``entries`` first (no entry yet, or a flow-style list)."""
    layout, items = yamltree.read_all(text, path)
    new = yamledit.insert_head(text, layout, items[0].first_line if items else None, middle)
    if new is None:
        new = expand.entries_yaml(entries) + expand.entries_yaml([i.value for i in items])
    return new


# ---------------------------------------------------------------- helpers

def _writer(text: Union[str, bytes]) -> Callable[[int], None]:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return lambda fd: write_all(fd, data)


def _write_head_copy_rest(fd: int, head: bytes, source: BinaryIO
                          ) -> Tuple[os.stat_result, os.stat_result]:
    """``head``, then ``source`` from its position on: in the kernel where it can.

    The new file keeps ``source``'s modification time, read after the copy: it
    says when a writer last wrote, not when Pegasus cut entries out. Returns
    the status of ``source`` and of the new file, as copied.
    """
    write_all(fd, head)
    source.seek(_copy_in_kernel(source.fileno(), fd, source.tell()))
    for chunk in iter(lambda: source.read(COPY_CHUNK), b""):  # what the kernel left
        write_all(fd, chunk)
    st = os.fstat(source.fileno())
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
    return st, os.fstat(fd)


def _copy_in_kernel(source: int, fd: int, offset: int) -> int:
    """Copy ``source`` from ``offset`` on with copy_file_range; where it stopped."""
    try:
        while True:
            copied = os.copy_file_range(source, fd, COPY_CHUNK, offset)
            if not copied:
                return offset
            offset += copied
    except AttributeError:  # not Linux
        return offset
    except OSError as err:
        if err.errno not in _NO_COPY_FILE_RANGE:
            raise
        return offset


def _read_prefix(f: BinaryIO, size: int, path: str) -> bytes:
    try:
        return f.read(size)
    except OSError as err:
        raise _io_error(path, "read", err) from None



def _stat(path: str) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _fstat(f: BinaryIO) -> Optional[os.stat_result]:
    """The open file's status (None for no file: an empty stand-in)."""
    return os.fstat(f.fileno()) if not isinstance(f, io.BytesIO) else None


def _mode_of(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return None




def _io_error(path: str, action: str, err: OSError) -> PegasusError:
    if err.errno == errno.EISDIR:
        return InputError("is a directory, not a file; give the path of a YAML file", path)
    if err.errno in _STORAGE_FAULTS:
        return storage_error(path, action, err)
    return PegasusError(f"{path}: cannot {action} it: {err.strerror}; check the "
                        "path and its permissions")


_STORAGE_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG)  # not the path's fault


def storage_error(path: str, action: str, err: OSError) -> StorageError:
    """A write that failed, in words: the full disk named as such."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"{path}: cannot {action} it: no space left on its device "
                            "(or quota); free some space")
    return StorageError(f"{path}: cannot {action} it: {err.strerror}; check the "
                        "path and its permissions")
