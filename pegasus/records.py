"""The record of every job: how Pegasus keeps "at most once" and "never lost".

One module owns the protocol; the queue file (``queuefile``) and the journal
(``journal``) are its two stores, and ``consumed.yaml`` and
``interrupted.yaml`` beside the queue are what the user reads. A job goes
through these steps, each recorded before the next one happens:

1. **taken**: a ticket is journaled (fsynced) with the name of the temporary
   file that holds the queue without the job; then that file is renamed over
   the queue; then the job is appended to ``consumed.yaml``. In queue mode
   the job runs on the sub-node it was taken for, so its launch is recorded
   in the same journal write (``launch_with_take``: one fsync less a job).
2. **launched** (broadcast mode, once per sub-node): journaled just before
   the command is sent.
3. **finished** with an exit status (a failure, a kill or a timeout is then
   also appended to ``failed.yaml``, after the journal: a crash in between
   loses that note, never records a job there twice), or **lost** (its outcome is unknown: the
   connection died while it ran; also written to ``interrupted.yaml``), or
   **put back** (never sent: it goes back to the head of the queue, announced
   in the journal before the rename, like a take).
4. **retried** (``retries:``): a failed attempt's end is journaled with a
   ``retry`` record in one fsync, and the next attempt's launch is journaled
   on its own (``launching``), on whatever sub-node it goes to. A job still
   waiting for its next attempt when the run stops is put back, with the
   retries it has left; so is it by the recovery after a crash.

When a Pegasus dies, its journal's lock is freed. The next one to start
(``open_run``) reads the dead journals under the queue lock: a job taken and
never launched goes back to the head of the queue, a job launched and never
settled is written to ``interrupted.yaml`` ("outcome unknown") and is not run
again until the user runs ``pegasus requeue``. A rewrite announced in a dead
journal happened unless its temporary file is still there (``journal``'s
void rule), so no job is put back twice or dropped.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple

from pegasus import expand, faults, jobids, yamltree
from pegasus import journal as journals
from pegasus.errors import PegasusError
from pegasus.model import Job, Outcome, Result
from pegasus.queuefile import (Check, LockWaitAborted, Place, QueueFile, append, read_text,
                               refuse_symlink, storage_error)

STOPPED = "Pegasus stopped while it ran; outcome unknown"
MAX_PUT_BACKS = 3  # a job not sent this often in one run is recorded as failed
Interrupted = List[Tuple[dict, str, Optional[int]]]  # (canonical entry, sub-node label, id)


@dataclass(frozen=True)
class Taken:
    """What one take took, and the error that stopped it early, if any."""

    jobs: Tuple[Job, ...]
    error: Optional[Exception] = None  # the bad entry that stopped the take early
    fault: Optional[Exception] = None  # consumed.yaml could not be written (jobs taken)
    signature: Optional[tuple] = None  # the queue file as left by this take, under the lock
    waiting: bool = False  # the next job has no place yet (it waits for slots)
    emptied: bool = False  # fewer jobs than wanted were there: the queue is empty
    pending: bool = False  # an entry not known whole yet (or its error): look again soon


class Records:
    """The records of one run's jobs (``journal`` None: no journal, for tests).

    ``broadcast``: one ticket runs on every sub-node, each launch journaled
    on its own; a job not sent to one sub-node fails there (the others ran
    it) instead of going back to the queue. Otherwise each job is taken for
    one sub-node and launched there at once (``launch_with_take``).
    """

    def __init__(self, queue: QueueFile, journal: Optional[journals.Journal] = None,
                 broadcast: bool = False):
        self.queue, self.journal = queue, journal
        self.launch_with_take = not broadcast
        self.unsent = _Unsent(self)  # jobs never sent: back to the queue

    # -- 1. taken

    def take(self, targets: Sequence[str], check: Check) -> Taken:
        """Up to len(targets) jobs; job i is recorded as run on targets[i]."""
        places = iter(targets)
        return self.take_placed(len(targets), lambda job: next(places), check)

    def take_placed(self, want: int, place: Place, check: Check) -> Taken:
        """Up to ``want`` jobs, each recorded as run where ``place(job)`` says.

        The first job ``place`` has no place for (None) stays in the queue,
        and the jobs after it (it waits for slots: nothing jumps ahead).
        """
        queue = self.queue
        with queue.locked(give_way=True):  # a take may wait for the lock another time
            self.unsent.insert_waiting()  # ahead of the queue's entries, as if not taken
            popped = queue.pop(want, check, place)
            jobs, targets, fault = list(popped.jobs), popped.places, None
            if jobs:
                refuse_symlink(queue.consumed_path)  # before anything changes
                tickets = self._tickets(len(jobs))
                try:
                    jobs = self._numbered(jobs, tickets)
                    queue.cut(popped, self._announce_taken(jobs, targets))
                except PegasusError:  # not taken: their tickets were never recorded
                    self._discard(tickets)
                    raise
                faults.point("queue-rewritten")
                try:  # the jobs are taken now: they run even if this fails
                    append(queue.consumed_path, _records("taken", jobs, targets))
                except PegasusError as err:
                    fault = err
                faults.point("consumed-appended")
            signature = queue.signature()  # an entry written after it is new
        empty = len(jobs) < want and not (popped.waiting or popped.pending or popped.error)
        return Taken(tuple(jobs), popped.error, fault, signature, popped.waiting, empty,
                     popped.pending)

    def _tickets(self, count: int) -> List[Optional[str]]:
        if self.journal is None:
            return [None] * count
        return [self.journal.new_ticket() for _ in range(count)]

    def _discard(self, tickets: List[Optional[str]]) -> None:
        if self.journal is not None:
            self.journal.discard(tickets)

    def _numbered(self, jobs: List[Job], tickets: List[Optional[str]]) -> List[Job]:
        """Each job its ticket and its id, reserved before the take is journaled."""
        first = jobids.reserve(self.queue.path, len(jobs))
        return [replace(job, ticket=ticket, id=first + i)
                for i, (job, ticket) in enumerate(zip(jobs, tickets))]

    def _announce_taken(self, jobs: List[Job], targets: Sequence[str]):
        journal = self.journal
        if journal is None:
            return None

        def announce(partial: str) -> None:
            journal.taken([(j.ticket, j.canonical(), t) for j, t in zip(jobs, targets)],
                          partial, launched=self.launch_with_take, ids=[j.id for j in jobs])
            faults.point("taken-journaled")
        return announce

    # -- 2. launched

    def launching(self, job: Job, node: str) -> None:
        """The job's command is about to be sent to ``node``."""
        again = job.attempt > 1  # a retry: launched anew, on a sub-node chosen now
        if self.journal is not None and job.ticket is not None and \
                (again or not self.launch_with_take):
            with _journal_errors(self.journal):
                self.journal.launched(job.ticket, node)
        faults.point("retry-launch-journaled" if again else "launch-journaled")

    # -- 3. finished, lost or put back

    def settle(self, result: Result, retry: Optional[dict] = None) -> Result:
        """Record how a job ended on its sub-node; returns the result as recorded.

        A job that could not be sent goes back to the queue, but not forever:
        after ``MAX_PUT_BACKS`` times in one run it is recorded as failed.
        ``retry``: this attempt failed (or was lost) and the job runs again; the
        entry a crash before its next launch puts back (journaled with the end).
        """
        outcome, job, node = result.outcome, result.job, result.node.label
        if retry is not None:
            return self._retried(result, retry)
        if outcome is Outcome.NOT_STARTED and self.launch_with_take:
            if self.unsent.back(job):
                return replace(result, put_back=True)
            result = replace(result, outcome_hint=Outcome.CANNOT_START,
                             error=f"could not be sent {MAX_PUT_BACKS + 1} times: "
                                   f"{result.error}")
            outcome = result.outcome
        if outcome in (Outcome.NOT_STARTED, Outcome.LOST, Outcome.ORPHANED, Outcome.ERROR):
            self.lost(job, node, result.error, to_user=outcome is not Outcome.NOT_STARTED)
        else:
            self._finished(result)
        self._compact()
        return result

    def _retried(self, result: Result, entry: dict) -> Result:
        """An attempt that runs again: journaled (fsynced), in no file of the user's."""
        job, node = result.job, result.node.label
        if self.journal is not None and job.ticket is not None:
            with _journal_errors(self.journal):
                if result.outcome in (Outcome.LOST, Outcome.ORPHANED):
                    self.journal.lost(job.ticket, node, result.error or "", retry=entry)
                else:
                    self.journal.finished(job.ticket, node, result.exit_status or 0,
                                          retry=entry)
            faults.point("retry-journaled")
        self._compact()
        return result

    def _finished(self, result: Result) -> None:
        job, node = result.job, result.node.label
        if self.journal is not None and job.ticket is not None:
            with _journal_errors(self.journal):
                self.journal.finished(job.ticket, node, result.exit_status or 0,
                                      last=self.launch_with_take)
            faults.point("finish-journaled")
        if self.launch_with_take and not result.ok:  # broadcast: once a step (step_done)
            self.failed(job, [result])

    def failed(self, job: Job, results: Sequence[Result]) -> None:
        """The job ended failed (killed, timed out) where ``results`` say: to failed.yaml."""
        where = ", ".join(r.node.label for r in results)
        why = "; ".join(r.describe() for r in results)
        with self.queue.records_locked():  # requeue --failed empties it under the lock
            append(self.queue.failed_path,
                   _entry_record("failed", job.canonical(), where, why, job.id))

    def step_done(self, job: Job, failed: Sequence[Result] = ()) -> None:
        """Broadcast: every sub-node's record of this job is in; its ticket is done.
        ``failed``: the sub-nodes where it ended failed (one record in failed.yaml)."""
        if failed:
            self.failed(job, failed)
        if self.journal is not None and job.ticket is not None:
            self.journal.settled(job.ticket)
        self._compact()

    def _compact(self) -> None:
        """Keep the journal small; only between whole operations (see journal)."""
        if self.journal is not None:
            with _journal_errors(self.journal):
                self.journal.compact_if_large()

    def put_back(self, jobs: Sequence[Job], entries: Optional[Sequence[dict]] = None) -> None:
        """Jobs that were never sent go back to the head of the queue (``entries``:
        as these, for jobs waiting for a retry: with the retries they have left)."""
        with self.queue.locked():
            self.insert_back(jobs, entries)

    def insert_back(self, jobs: Sequence[Job], entries: Optional[Sequence[dict]] = None) -> None:
        """``put_back``, the caller holding the queue lock."""
        tickets = [j.ticket for j in jobs]
        journal = self.journal
        announce = None if journal is None else (
            lambda partial: journal.put_back(tickets, partial))
        self.queue.insert_head(entries or [j.canonical() for j in jobs], announce)

    def lost(self, job: Job, node: str, reason: str, to_user: bool = True) -> None:
        """The job's outcome on ``node`` is unknown: recorded for the user to re-run.

        ``to_user=False``: broadcast's sub-node that never got the command (the
        step fails there; nothing to re-run).
        """
        with self.queue.records_locked():  # not the queue's: lock mode may hold it
            if to_user:
                _interrupted_once(self.queue, job.canonical(), node, reason, job.id)
            if self.journal is not None and job.ticket is not None:
                with _journal_errors(self.journal):
                    self.journal.lost(job.ticket, node, reason, last=self.launch_with_take)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()


class _Unsent:
    """Jobs that could not be sent go back to the head of the queue, at most
    ``MAX_PUT_BACKS`` times each in a run. While someone else holds the queue lock
    (lock mode's editor is open) they wait here, not the loop: the next take puts
    them back first, under the lock it holds anyway, and so does the end of the
    run (``insert_waiting``). A crash meanwhile leaves them launched and never
    settled in the journal: reported interrupted, never run twice."""

    def __init__(self, records: "Records"):
        self.records = records
        self.times: Counter = Counter()  # (command, params) -> times put back
        self.waiting: List[Job] = []

    def back(self, job: Job) -> bool:
        """Whether ``job`` goes back to the queue (now, or at the next take)."""
        key = (job.command, job.params)
        self.times[key] += 1
        if self.times[key] > MAX_PUT_BACKS:
            return False
        try:
            with self.records.queue.locked(give_way=True):
                self.records.insert_back([job])
        except LockWaitAborted:  # something to do meanwhile (Ctrl-c, a job's end)
            self.waiting.append(job)
        return True

    def insert_waiting(self) -> None:
        """The caller holds the queue lock."""
        jobs, self.waiting = self.waiting, []
        if jobs:
            try:
                self.records.insert_back(jobs)
            except BaseException:
                self.waiting = jobs + self.waiting
                raise

    def end(self) -> None:
        """The run ends: those still waiting go back, the lock waited for."""
        if self.waiting:
            with self.records.queue.locked():
                self.insert_waiting()


# ---------------------------------------------------------------- after a crash

def open_run(queue: QueueFile, broadcast: bool) -> Tuple[Records, int, Interrupted]:
    """Settle what dead Pegasus processes left, then start this run's journal.

    Returns (this run's records, jobs put back, jobs interrupted).
    """
    with queue.locked():
        put_back, interrupted = _recover(queue)
        journal = journals.Journal.create(queue.path)
    return Records(queue, journal, broadcast), put_back, interrupted


def recover(queue: QueueFile) -> Tuple[int, Interrupted]:
    """Settle dead processes' journals: (jobs put back, [(entry, node, job id)])."""
    with queue.locked():
        return _recover(queue)


def _recover(queue: QueueFile) -> Tuple[int, Interrupted]:
    put_back, interrupted = 0, []
    for orphan in journals.read_orphans(queue.path, queue.partial_names()):
        if orphan.ids:  # the counter's last write may be lost (an OS crash): never reuse
            jobids.at_least(queue.path, max(orphan.ids.values()) + 1)
        tickets = [ticket for ticket, _ in orphan.unlaunched]
        queue.insert_head([entry for _, entry in orphan.unlaunched],
                          lambda partial: orphan.journal.put_back(tickets, partial))
        with queue.records_locked():
            for ticket, entry, node in orphan.interrupted:
                _interrupted_once(queue, entry, node, STOPPED, orphan.ids.get(ticket))
        orphan.journal.remove()
        put_back += len(orphan.unlaunched)
        interrupted += [(entry, node, orphan.ids.get(ticket))
                        for ticket, entry, node in orphan.interrupted]
    queue.remove_partial_files()  # under the lock: all from the dead
    return put_back, interrupted


def requeue(queue: QueueFile, failed: bool = False, dry_run: bool = False) -> List:
    """Move the entries of interrupted.yaml (``failed``: failed.yaml) to the head
    of the queue; the entries moved (``dry_run``: that would move)."""
    path = queue.failed_path if failed else queue.interrupted_path
    with queue.locked():
        if not dry_run:
            _recover(queue)
        with queue.records_locked():
            text = read_text(path)
            _, items = yamltree.read_all(text, path)
            entries = [item.value for item in items]
            if entries and not dry_run:
                queue.insert_head(entries)
                queue.write_atomic(path, "")
    return entries


def _interrupted_once(queue: QueueFile, entry: dict, node: str, reason: str,
                      job_id: Optional[int] = None) -> None:
    """Append to interrupted.yaml unless this entry on this node is there.

    A crash between recording a job there and journaling it leaves it to
    the next recovery, which must not list it twice.
    """
    body = expand.entries_yaml([entry])
    text = read_text(queue.interrupted_path)
    start = text.find(body)
    while start >= 0:
        header = text[:start].rstrip("\n").rpartition("\n")[2]
        after = text[start + len(body):]
        if (header.startswith("# interrupted ") and f" for {node}: " in header
                and (not after or after.startswith("#"))):
            return
        start = text.find(body, start + 1)
    append(queue.interrupted_path, _entry_record("interrupted", entry, node, reason, job_id))


@contextmanager
def _journal_errors(journal: journals.Journal):
    """A journal write that fails (a full disk) in words."""
    try:
        yield
    except OSError as err:
        raise storage_error(journal.path, "append to", err) from None


def _records(what: str, jobs: Sequence[Job], targets: Sequence[str]) -> str:
    return "".join(_entry_record(what, job.canonical(), target, job_id=job.id)
                   for job, target in zip(jobs, targets))


def _entry_record(what: str, entry: dict, target: str, why: str = "",
                  job_id: Optional[int] = None) -> str:
    """``# taken <time> #17 for [node]`` (plus ``: why``) and the canonical entry."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    number = "" if job_id is None else f" #{job_id}"
    why = f": {why}" if why else ""
    return f"# {what} {stamp}{number} for {target}{why}\n" + expand.entries_yaml([entry])
