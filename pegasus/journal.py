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

``taken``, ``put-back`` and ``launched`` are fsynced before the step they
announce. A torn last line (a crash mid-write) is ignored when reading. A
rewrite a dead Pegasus announced happened unless its temporary file is still
there, un-renamed (the "void rule"; every rewrite has its own file).
This module knows nothing of YAML files: ``queuefile`` acts on what
``read_orphans`` finds.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import secrets
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from pegasus.errors import PegasusError


class Journal:
    """This process's journal file, locked while the process lives."""

    def __init__(self, path: str, fd: int):
        self.path, self.fd = path, fd
        self.open_tickets: set = set()

    @classmethod
    def create(cls, queue_path: str) -> "Journal":
        path = f"{_prefix(queue_path)}{secrets.token_hex(6)}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
                         | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise PegasusError(f"{path}: cannot create the job journal: "
                               f"{err.strerror}; check the folder's permissions") from None
        return cls(path, fd)

    def new_ticket(self) -> str:
        ticket = secrets.token_hex(8)
        self.open_tickets.add(ticket)
        return ticket

    def taken(self, items: Sequence[Tuple[str, dict, str]], partial: str,
              launched: bool = False) -> None:
        """(ticket, canonical entry, target) for each job taken; fsynced.

        ``launched``: each target is a sub-node the job is launched on right
        away; that is recorded now, in the same fsync (queue mode).
        """
        records = [{"ev": "taken", "ticket": t, "entry": e, "target": target,
                    "partial": partial} for t, e, target in items]
        if launched:
            records += [{"ev": "launched", "ticket": t, "node": target}
                        for t, _, target in items]
        self._write(records, sync=True)

    def put_back(self, tickets: Sequence[str], partial: str) -> None:
        self._write([{"ev": "put-back", "tickets": list(tickets), "partial": partial}],
                    sync=True)
        self.open_tickets.difference_update(tickets)

    def launched(self, ticket: str, node: str) -> None:
        self._write([{"ev": "launched", "ticket": ticket, "node": node}], sync=True)

    def finished(self, ticket: str, node: str, status: int) -> None:
        self._write([{"ev": "finished", "ticket": ticket, "node": node, "exit": status}],
                    sync=False)
        self.open_tickets.discard(ticket)

    def lost(self, ticket: str, node: str, reason: str) -> None:
        self._write([{"ev": "lost", "ticket": ticket, "node": node, "reason": reason}],
                    sync=True)
        self.open_tickets.discard(ticket)

    def close(self) -> None:
        """Remove the journal when every job it took is accounted for."""
        if not self.open_tickets:
            _unlink(self.path)
        os.close(self.fd)

    def remove(self) -> None:
        _unlink(self.path)
        os.close(self.fd)

    def _write(self, records: List[dict], sync: bool) -> None:
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        view = memoryview(data.encode("utf-8"))
        while view:
            view = view[os.write(self.fd, view):]
        if sync:
            os.fsync(self.fd)


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


def read_orphans(queue_path: str, partials: set) -> List[Orphan]:
    """Journals whose process died (call under the queue lock).

    ``partials``: the names of the queue's temporary files lying there,
    un-renamed (each rewrite writes its own, under a new name).
    """
    orphans = []
    for path in sorted(glob.glob(glob.escape(_prefix(queue_path)) + "*")):
        fd = _lock_if_orphan(path)
        if fd is not None:
            records, torn = _records(path)
            if torn:  # end the torn line: recovery's own records must stay readable
                os.write(fd, b"\n")
            orphans.append(_resolve(Journal(path, fd), records, partials))
    return orphans


def _lock_if_orphan(path: str) -> Optional[int]:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)  # its Pegasus is alive
        return None
    return fd


def _records(path: str) -> Tuple[List[dict], bool]:
    """The records, and whether the last line is torn (has no newline)."""
    with open(path, "rb") as f:
        data = f.read()
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
    for index, rec in enumerate(records):
        ev, ticket = rec.get("ev"), rec.get("ticket")
        if ev == "taken" and index not in void:
            taken[ticket] = rec
        elif ev == "put-back" and index not in void:
            put_back.update(rec["tickets"])
        elif ev == "launched":
            running.setdefault(ticket, []).append(rec["node"])
        elif ev in ("finished", "lost") and rec.get("node") in running.get(ticket, ()):
            running[ticket].remove(rec["node"])
    orphan = Orphan(journal)
    for ticket, rec in taken.items():
        if ticket in put_back:
            continue
        if ticket not in running:
            orphan.unlaunched.append((ticket, rec["entry"]))
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


def _prefix(queue_path: str) -> str:
    folder, name = os.path.split(os.path.abspath(queue_path))
    return os.path.join(folder, f".{name}.journal-")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
