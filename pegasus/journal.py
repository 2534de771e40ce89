"""The job journal: an append-only record of what each job went through.

Every running Pegasus keeps its own journal beside the queue file,
``.queue.yaml.journal-<random>``, and holds an ``flock`` on it for its whole
life: when the process dies the kernel frees the lock, which is how a later
Pegasus knows the journal is an orphan to recover. One JSON object a line:

- ``taken``: a job left the queue (ticket, canonical entry, target, and
  ``partial``: the name of the temporary file holding the new queue, written
  and fsynced but not yet renamed over the old one; every rewrite has its own)
- ``put-back``: jobs that were not started went back to the queue (``partial``)
- ``launched``: the job's command is about to be sent to a sub-node (queue
  mode writes it with ``taken``, in the same fsync: the job goes to the
  sub-node it was taken for)
- ``finished``: its exit status there; ``lost``: its outcome there is unknown
  (broadcast mode launches one ticket on every sub-node: each is settled
  on its own)
- ``retry`` (written with the ``finished`` or ``lost`` of a failed attempt, in
  one fsync): the ticket runs again; its next ``launched`` starts the next
  attempt. A crash before that puts the job back at the head of the queue
  with the retries it has left (the record's ``entry``): no attempt is lost,
  none runs twice

``taken``, ``put-back`` and ``launched`` are fsynced before the step they
announce. A torn last line (a crash mid-write) is ignored when reading. A
rewrite a dead Pegasus announced happened unless its temporary file is still
there, un-renamed (the "void rule"; every rewrite has its own file).

A ticket is live from its take until it is settled everywhere (or put back);
the journal keeps the lines of the live tickets in memory and, once the file
has grown past a limit, compacts it: it writes those lines alone to a new
file, locked from its creation and named outside the orphans' pattern, and
renames it over the journal (``Journal.compact_if_large``). A crash before
the rename leaves the old journal whole, one after it the compacted one;
never two journals with the same tickets.

This module knows nothing of YAML files: ``queuefile`` acts on what
``read_orphans`` finds.
"""

from __future__ import annotations

import fcntl
import glob
import itertools
import json
import os
import secrets
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from pegasus import faults
from pegasus.diskio import NotWritten, fsync_folder, unlink_quietly, write_all
from pegasus.errors import PegasusError

DEFAULT_LIMIT = 256 * 1024  # bytes: compacted past this, a journal stays far below 1 MB
LIMIT_VARIABLE = "PEGASUS_JOURNAL_LIMIT"  # a testing knob: the limit in bytes


@dataclass
class _Ticket:
    """A live ticket: the journal lines written for it, where it runs."""

    lines: List[bytes] = field(default_factory=list)
    running: List[str] = field(default_factory=list)  # launched, not finished or lost


class Journal:
    """This process's journal file, locked while the process lives."""

    def __init__(self, path: str, fd: int, limit: int = DEFAULT_LIMIT):
        self.path, self.fd, self.limit = path, fd, limit
        self.size = 0  # bytes in the file, counted as they are written (no stat)
        self._live: Dict[str, _Ticket] = {}
        self._live_bytes = 0  # what a compaction would write
        self._putting_back: List[Tuple[str, List[str], bytes]] = []  # rename unconfirmed

    @classmethod
    def create(cls, queue_path: str) -> "Journal":
        """A new journal, locked; the limit comes from ``PEGASUS_JOURNAL_LIMIT``
        (bytes, for tests) or is ``DEFAULT_LIMIT``."""
        limit = _limit_from_environment()
        path = f"{_prefix(queue_path)}{secrets.token_hex(6)}"
        try:
            fd = _create_locked(path)
        except OSError as err:
            raise PegasusError(f"{path}: cannot create the job journal: "
                               f"{err.strerror}; check the folder's permissions") from None
        return cls(path, fd, limit)

    @property
    def live_tickets(self) -> Tuple[str, ...]:
        return tuple(self._live)

    def new_ticket(self) -> str:
        ticket = secrets.token_hex(8)
        self._live[ticket] = _Ticket()
        return ticket

    def taken(self, items: Sequence[Tuple[str, dict, str]], partial: str,
              launched: bool = False, ids: Sequence[Optional[int]] = ()) -> None:
        """(ticket, canonical entry, target) for each job taken; fsynced. ``ids``:
        the jobs' ids (jobids), kept for ``interrupted.yaml``. ``launched``: each
        target is a sub-node the job is launched on right away; that is
        recorded now, in the same fsync (queue mode)."""
        records = [_taken_record(t, e, target, partial, job_id) for (t, e, target), job_id
                   in itertools.zip_longest(items, ids[:len(items)])]
        if launched:
            records += [{"ev": "launched", "ticket": t, "node": target}
                        for t, _, target in items]
        for ticket, _, target in items:
            live = self._live.setdefault(ticket, _Ticket())
            if launched:
                live.running.append(target)
        self._write(records, sync=True)

    def put_back(self, tickets: Sequence[str], partial: str) -> None:
        """The tickets end once the rename of ``partial`` is seen done (a
        compaction before it would drop records the void rule still needs)."""
        line = _line({"ev": "put-back", "tickets": list(tickets), "partial": partial})
        self._put(line)
        self._putting_back.append((str(partial), list(tickets), line))
        self._live_bytes += len(line)
        os.fsync(self.fd)

    def discard(self, tickets: Sequence[str]) -> None:
        """Forget the tickets of a take that did not happen (those with no record)."""
        for ticket in tickets:
            live = self._live.get(ticket)
            if live is not None and not live.lines:
                del self._live[ticket]

    def launched(self, ticket: str, node: str) -> None:
        if ticket in self._live:
            self._live[ticket].running.append(node)
        self._write([{"ev": "launched", "ticket": ticket, "node": node}], sync=True)

    def finished(self, ticket: str, node: str, status: int, *, last: bool = True,
                 retry: Optional[dict] = None) -> None:
        """Its exit status on ``node``. ``last``: no other sub-node runs this
        ticket, so it is settled (queue mode); else call ``settled`` later.
        ``retry``: the job runs again; the entry to put back if it never does."""
        self._write([{"ev": "finished", "ticket": ticket, "node": node, "exit": status}]
                    + _retry(ticket, retry), sync=retry is not None)
        self._node_done(ticket, node, last and retry is None)

    def lost(self, ticket: str, node: str, reason: str, *, last: bool = True,
             retry: Optional[dict] = None) -> None:
        """Its outcome on ``node`` is unknown; ``last`` and ``retry`` as for ``finished``."""
        self._write([{"ev": "lost", "ticket": ticket, "node": node, "reason": reason}]
                    + _retry(ticket, retry), sync=True)
        self._node_done(ticket, node, last and retry is None)

    def settled(self, ticket: str) -> None:
        """No record will come for ``ticket`` any more: a compaction drops its lines.

        Broadcast mode calls it when the step is over on every sub-node. A
        ticket still running on a sub-node (launched, neither finished nor
        lost there) stays live: dropping it would lose that job in a crash.
        """
        live = self._live.get(ticket)
        if live is not None and not live.running:
            self._end(ticket)

    def compact_if_large(self) -> bool:
        """Past the limit, rewrite the journal with the live tickets' lines alone.

        Call it only between whole operations, never between a ``taken`` or
        ``put-back`` record and the rename of the queue file it announces: the
        void rule judges such a record by that file, and the compaction would
        have dropped it. Costs a comparison when there is nothing to do. The
        file stays below max(limit, twice the live lines) plus one operation.
        Returns whether it compacted; if it could not (an I/O error, or a
        recovery removed the new file before it was locked), the old journal
        is whole and grows on, and the next call tries again.
        """
        if self._putting_back:
            self._confirm_put_backs()
        if self.size <= max(self.limit, 2 * self._live_bytes):
            return False
        try:
            fd = self._write_compacted()
        except OSError:
            return False
        self._switch_to(fd)
        return True

    def close(self) -> None:
        """Remove the journal when every job it took is accounted for."""
        self._confirm_put_backs()
        if not self._live:
            unlink_quietly(self.path)
        os.close(self.fd)

    def remove(self) -> None:
        unlink_quietly(self.path)
        os.close(self.fd)

    # -- inside

    def _node_done(self, ticket: str, node: str, last: bool) -> None:
        live = self._live.get(ticket)
        if live is not None and node in live.running:
            live.running.remove(node)
        if last:
            self.settled(ticket)

    def _confirm_put_backs(self) -> None:
        """A put-back whose temporary file is gone was renamed: its tickets end."""
        folder = os.path.dirname(self.path)
        waiting = []
        for partial, tickets, line in self._putting_back:
            if os.path.lexists(os.path.join(folder, partial)):
                waiting.append((partial, tickets, line))
                continue
            self._live_bytes -= len(line)
            for ticket in tickets:
                self._end(ticket)
        self._putting_back = waiting

    def _end(self, ticket: str) -> None:
        live = self._live.pop(ticket, None)
        if live is not None:
            self._live_bytes -= sum(len(line) for line in live.lines)

    def _write(self, records: List[dict], sync: bool) -> None:
        lines = [_line(r) for r in records]
        self._put(b"".join(lines))
        for record, line in zip(records, lines):  # kept before synced: safe side
            live = self._live.get(record["ticket"])
            if live is not None:
                live.lines.append(line)
                self._live_bytes += len(line)
        if sync:
            os.fsync(self.fd)

    def _put(self, data: bytes) -> None:
        """Write at the end; NotWritten: failed (a full disk), and taken back."""
        _write_at_end(self.fd, self.size, data, self.path)
        self.size += len(data)

    def _write_compacted(self) -> int:
        return _write_compacted(self.path, self._live_lines())

    def _switch_to(self, fd: int) -> None:
        old, self.fd, self.size = self.fd, fd, self._live_bytes
        try:
            fsync_folder(os.path.dirname(self.path))
            faults.point("compact-renamed")
        finally:
            os.close(old)  # its lock goes: recovery checks it locked the file at the path

    def _live_lines(self) -> bytes:
        return b"".join([line for live in self._live.values() for line in live.lines]
                        + [line for _, _, line in self._putting_back])


def _write_compacted(path: str, lines: bytes) -> int:
    """The new file, written, fsynced, renamed over the journal at ``path``; its fd."""
    head, _, _ = path.rpartition(".journal-")
    temp = f"{head}.jcompact-{secrets.token_hex(6)}"
    fd = _create_locked(temp)  # locked before a recovery can take it for dead
    try:
        faults.point("compact-started")
        write_all(fd, lines)
        os.fsync(fd)
        faults.point("compact-written")
        os.replace(temp, path)
    except OSError:
        os.close(fd)
        unlink_quietly(temp)
        raise
    return fd


def _retry(ticket: str, entry: Optional[dict]) -> List[dict]:
    """The ``retry`` record: the ticket runs again, launched anew (``launched``);
    until then a crash puts ``entry`` back at the head of the queue."""
    return [] if entry is None else [{"ev": "retry", "ticket": ticket, "entry": entry}]


def _taken_record(ticket: str, entry: dict, target: str, partial: str,
                  job_id: Optional[int]) -> dict:
    record = {"ev": "taken", "ticket": ticket, "entry": entry, "target": target,
              "partial": partial}
    if job_id is not None:
        record["id"] = job_id
    return record


# ---------------------------------------------------------------- recovery

@dataclass
class Orphan:
    """What a dead Pegasus left: jobs to put back and jobs of unknown outcome.

    ``journal`` is its journal, now locked by us: recovery records what it
    does there, so a recovery cut short by a crash is not done twice.
    """

    journal: Journal
    unlaunched: List[Tuple[str, dict]] = field(default_factory=list)  # (ticket, entry)
    interrupted: List[Tuple[str, dict, str]] = field(default_factory=list)  # + node
    ids: Dict[str, int] = field(default_factory=dict)  # ticket -> job id (journaled takes)


def read_orphans(queue_path: str, partials: set) -> List[Orphan]:
    """Journals whose process died (call under the queue lock).

    ``partials``: the names of the queue's temporary files lying there,
    un-renamed (each rewrite writes its own, under a new name). Removes the
    files that compactions of dead processes left before their rename.
    """
    orphans = []
    for path in sorted(glob.glob(glob.escape(_prefix(queue_path)) + "*")):
        fd = _lock_if_orphan(path)
        if fd is not None:
            records, torn = _records(fd)
            if torn:  # end the torn line: recovery's own records must stay readable
                os.write(fd, b"\n")
            orphans.append(_resolve(Journal(path, fd), records, partials))
    _remove_dead_compactions(queue_path)
    return orphans


def _lock_if_orphan(path: str) -> Optional[int]:
    """Our locked fd on the journal at ``path`` if its Pegasus is dead.

    A live Pegasus always holds the lock of the file at ``path``, but the file
    we opened may have been replaced since by a compaction, which then lets
    its lock go: a lock proves death only on the file still at the path.
    """
    for _ in range(3):  # each retry means a live Pegasus just compacted
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its Pegasus is alive
            return None
        if _is_at(fd, path):
            return fd
        os.close(fd)
    return None


def _remove_dead_compactions(queue_path: str) -> None:
    """A compaction's new file that nobody locks was left by a crash before
    its rename: the journal it was to replace is whole. Remove it."""
    for path in glob.glob(glob.escape(_prefix(queue_path, "jcompact")) + "*"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            unlink_quietly(path)
        except OSError:
            pass  # locked: a live Pegasus is compacting
        finally:
            os.close(fd)


def _is_at(fd: int, path: str) -> bool:
    mine = os.fstat(fd)
    try:
        there = os.lstat(path)
    except FileNotFoundError:
        return False
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def _records(fd: int) -> Tuple[List[dict], bool]:
    """The records, and whether the last line is torn (has no newline)."""
    data = _read_all(fd)
    records = []
    for line in data.split(b"\n")[:-1]:  # a torn last line has no newline
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records, not data.endswith(b"\n") and data != b""


def _resolve(journal: Journal, records: List[dict], partials: set) -> Orphan:
    void = _void_rewrite(records, partials)
    taken: Dict[str, dict] = {}
    put_back: set = set()
    running: Dict[str, List[str]] = {}  # ticket -> nodes launched, not settled
    retrying: Dict[str, dict] = {}  # ticket -> its entry: to run again, not launched yet
    ids: Dict[str, int] = {}  # every id given out, void takes' too: none is given again
    for index, rec in enumerate(records):
        ev, ticket = rec.get("ev"), rec.get("ticket")
        if ev == "taken" and isinstance(rec.get("id"), int):
            ids[ticket] = rec["id"]
        if ev == "taken" and index not in void:
            taken[ticket] = rec
        elif ev == "put-back" and index not in void:
            put_back.update(rec["tickets"])
        elif ev == "launched":
            running.setdefault(ticket, []).append(rec["node"])
            retrying.pop(ticket, None)
        elif ev == "retry":
            retrying[ticket] = rec["entry"]
        elif ev in ("finished", "lost") and rec.get("node") in running.get(ticket, ()):
            running[ticket].remove(rec["node"])
    orphan = Orphan(journal, ids=ids)
    for ticket, rec in taken.items():
        if ticket in put_back:
            continue
        if ticket not in running or ticket in retrying:  # never ran, or not again yet
            orphan.unlaunched.append((ticket, retrying.get(ticket, rec["entry"])))
        orphan.interrupted.extend((ticket, rec["entry"], node)
                                  for node in running.get(ticket, ()))
    return orphan


def _void_rewrite(records: List[dict], partials: set) -> set:
    """Indexes of the rewrite records whose rewrite never happened.

    A rewrite is journaled after its temporary file is written and before the
    rename; if that very file is still there, the crash came in between.
    """
    return {i for i, r in enumerate(records)
            if r.get("ev") in ("taken", "put-back") and r.get("partial") in partials}


def journal_paths(queue_path: str) -> List[str]:
    """The journals beside the queue: one per running (or dead, unrecovered) Pegasus."""
    return glob.glob(glob.escape(_prefix(queue_path)) + "*")


def _prefix(queue_path: str, kind: str = "journal") -> str:
    """``.queue.yaml.journal-``; ``jcompact``: a compaction's new file, which
    the journals' pattern does not match, so it is never taken for an orphan."""
    folder, name = os.path.split(os.path.abspath(queue_path))
    return os.path.join(folder, f".{name}.{kind}-")



def _create_locked(path: str) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
                 | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def _write_at_end(fd: int, size: int, data: bytes, path: str) -> None:
    """Write ``data`` after the ``size`` bytes of the file. A write that fails is
    taken back (the file cut back to ``size``) and raised as NotWritten, so that
    no half record stays, unless that fails too."""
    try:
        write_all(fd, data)
    except OSError as err:
        try:
            os.ftruncate(fd, size)
        except OSError:
            raise err from None
        raise NotWritten(err.errno, err.strerror, path) from None


def _line(record: dict) -> bytes:
    return (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")



def _read_all(fd: int) -> bytes:
    chunks, offset = [], 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)



def _limit_from_environment() -> int:
    value = os.environ.get(LIMIT_VARIABLE)
    if value is None:
        return DEFAULT_LIMIT
    try:
        return int(value)
    except ValueError:
        raise PegasusError(f"{LIMIT_VARIABLE}={value!r}: give the journal's size limit "
                           "in bytes, or unset it") from None
