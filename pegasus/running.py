"""The parts of a run that the loop (``modes``) drives, each with one job.

``Run`` is everything a loop needs, built whole before it starts;
``StopFlag`` lets a signal interrupt a wait for the queue lock; ``QueueHead``
is what the loop knows of the queue's head; ``Jobs`` holds the running jobs'
greenlets (with ``modes``, ``connecting``, ``probing`` and ``controlserver``, the
only code that spawns).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Set, Tuple

import gevent

from pegasus.errors import WAITS_FOR_FIX, HostError, InputError
from pegasus.events import JobDone
from pegasus.executor import KILL_AFTER, ConnectionLost
from pegasus.halt import Policy
from pegasus.job import NO_LOG, run_job
from pegasus.joblogs import JobLogs
from pegasus.model import TIMED_OUT_STATUS, Job, Result, SubNode
from pegasus.options import format_duration
from pegasus.output import Sink
from pegasus.queuefile import Check, LockWaitAborted, QueueFile
from pegasus.records import Records
from pegasus.words import plural

GIVE_UP_AFTER = 3  # seconds after a stopped job's KILL before Pegasus stops waiting for it


class StopFlag:
    """Set by a signal handler at once, even while the loop waits for the lock."""

    def __init__(self):
        self.requested = False

    def wait(self, seconds: float) -> None:
        """Waiting for the queue lock (someone edits): give up on a signal."""
        if self.requested:
            raise LockWaitAborted()
        gevent.sleep(seconds)


@dataclass(frozen=True)
class Run:
    """Everything a loop needs, built whole before it starts."""

    nodes: List[SubNode]
    executors: Dict[SubNode, object]  # the sub-nodes reached at start
    connecting: Dict[SubNode, gevent.Greenlet]  # first connections still being made
    failed: List[HostError]  # the first connections that failed (being retried)
    connector: object  # connecting.Connector (or a fake): reconnects lost hosts
    queue: QueueFile  # built with ``wait=stop.wait``
    records: Records
    sink: Sink
    stop: StopFlag
    check: Check  # expand.checker(nodes): raises InputError for a job that cannot run
    daemon: bool = False
    error_aborts: bool = False
    queued: int = 0  # jobs in the queue file at the start-up check (the progress line)
    timeout: Optional[float] = None  # --timeout: seconds, for jobs without their own
    halt: Optional[Policy] = None  # --halt (None: never)
    logs: Optional[JobLogs] = None  # None: --no-logs


class QueueHead:
    """What the loop knows of the queue's head: empty, blocked by a bad entry,
    or waiting for slots to free up.

    An empty or blocked queue is looked at again only once the file changed;
    a head waiting for slots also once a job finished (``wake``).
    """

    def __init__(self, queue: QueueFile, sink: Sink, daemon: bool):
        self.queue, self.sink, self.daemon = queue, sink, daemon
        self.blocked: Optional[InputError] = None  # the bad entry at the head
        self.empty = False
        self.waiting = False  # the head job has no place yet (its slots are in use)
        self.seen_signature = None  # the file as last found empty, blocked or waiting

    def may_have_jobs(self) -> bool:
        if self.blocked is not None and not self.daemon:
            return False
        return self.seen_signature is None or self.queue.signature() != self.seen_signature

    def took(self, taken: int, emptied: bool, error: Optional[InputError], signature,
             waiting: bool = False, pending: bool = False) -> None:
        """After a take: fewer jobs than asked for means the queue is empty,
        unless the take stopped at a job with no place yet (``waiting``) or at
        an entry ``pending`` (not known whole yet, or its error: looked at
        again soon).

        ``signature``: the file as the take left it, read under the lock, so
        an entry written after the take is never taken for seen.
        """
        if error is not None:
            return self.block(error, signature)
        if pending and not waiting:  # nothing known yet of what follows
            self.blocked = None if taken else self.blocked  # a blocked head stays blocked
            self.empty, self.seen_signature = False, None
            return None
        self.blocked, self.empty, self.waiting = None, emptied, waiting
        self.seen_signature = signature if emptied or waiting else None

    def wake(self) -> None:
        """Slots or sub-nodes freed up: a waiting head may have a place now."""
        if self.waiting:
            self.waiting, self.seen_signature = False, None

    def block(self, err: InputError, signature=None) -> None:
        """A bad entry at the head: say so once; a daemon waits for the fix."""
        if self.blocked is None or str(err) != str(self.blocked):
            tail = (WAITS_FOR_FIX if self.daemon else
                    "no more entries are taken; fix it and run Pegasus again")
            self.sink.message(f"{err.advising(None)}\n(this entry stays in the queue; {tail})")
        self.blocked = err
        self.seen_signature = signature or self.queue.signature()

    def done(self) -> bool:
        """Nothing more to take, for a run that is not a daemon."""
        return not self.daemon and (self.blocked is not None or self.empty)


class Jobs:
    """The running jobs: one greenlet each, stopped, timed out or given up on by
    sub-node. ``timeout``: seconds a job without its own ``timeout:`` may run."""

    def __init__(self, hosts, records: Records, sink: Sink, post,
                 timeout: Optional[float] = None, logs: Optional[JobLogs] = None):
        self.hosts, self.records, self.sink, self.post = hosts, records, sink, post
        self.timeout, self.logs = timeout, logs
        self.greenlets: Dict[SubNode, gevent.Greenlet] = {}
        self.timers: Dict[SubNode, List[gevent.Greenlet]] = {}  # ended with the job
        self.expired: Dict[SubNode, float] = {}  # the timeouts that ran out
        self.killed: Set[SubNode] = set()  # the sub-nodes whose job ``pegasus kill`` stopped
        self.running: Dict[SubNode, Tuple[Job, float]] = {}  # job and start (epoch s)

    def start(self, node: SubNode, job: Job) -> None:
        self.running[node] = (job, time.time())
        self.greenlets[node] = gevent.spawn(self._run, node, job)
        seconds = job.timeout or self.timeout
        if seconds:
            self.timers[node] = [gevent.spawn_later(seconds, self._expire, node, seconds)]

    def _run(self, node: SubNode, job: Job) -> None:
        log = NO_LOG if self.logs is None else self.logs.start(job.id, node)
        try:
            result = run_job(node, job, self.hosts.executor(node), self.sink,
                             lambda: self.records.launching(job, node.label), log,
                             lambda done: self._verdict(node, done))
        except Exception as err:  # noqa: BLE001 - a bug must not hang the loop
            result = Result(node, job, job.command, error=f"internal error: {err!r}")
        log.end(result)  # its joblog row: the job ended (``pegasus log -f`` stops)
        self.post(JobDone(result))

    def _expire(self, node: SubNode, seconds: float) -> None:
        greenlet = self.greenlets.get(node)
        if greenlet is None or greenlet.dead:
            return
        self.expired[node] = seconds
        self.sink.message(f"{node.label} timed out after {format_duration(seconds)}: "
                          f"stopping it (TERM, then KILL {KILL_AFTER:g} s later)")
        self.stop([node])

    def kill(self, nodes: List[SubNode]) -> None:
        """``pegasus kill``: stop these jobs as a timeout does; they were killed by user."""
        self.killed.update(nodes)
        self.stop(nodes)

    def _verdict(self, node: SubNode, result: Result) -> Result:
        """A job stopped by its timeout (it did not succeed first) timed out: 124;
        one stopped by ``pegasus kill`` was killed by user."""
        if node in self.killed and result.error is None and result.exit_status != 0:
            return replace(result, killed=True)
        seconds = self.expired.get(node)
        if seconds is None or result.error is not None or result.exit_status == 0:
            return result
        return replace(result, exit_status=TIMED_OUT_STATUS, timed_out=seconds)

    def ended(self, node: SubNode) -> None:
        self.greenlets.pop(node, None)
        self.running.pop(node, None)
        self.expired.pop(node, None)
        self.killed.discard(node)
        for timer in self.timers.pop(node, ()):
            timer.kill(block=False)

    def stop_all(self, nodes: List[SubNode]) -> None:
        """Stop the running jobs (second Ctrl-c, SIGTERM, ``--halt now``), saying so."""
        if nodes:  # nothing to say when none runs: the summary follows at once
            self.sink.message(f"stopping {plural(len(nodes), 'running job')}")
        self.stop(nodes)

    def stop(self, nodes: List[SubNode]) -> None:
        """TERM to each job's process group, KILL later; then stop waiting for it."""
        for node in nodes:
            executor = self.hosts.executor(node)
            gevent.spawn(executor.cancel)
            self.timers.setdefault(node, []).extend((
                gevent.spawn_later(KILL_AFTER, executor.kill),  # local; remote watchdogs do their own
                gevent.spawn_later(KILL_AFTER + GIVE_UP_AFTER, self.abandon, node,
                                   f"no answer {KILL_AFTER + GIVE_UP_AFTER} s after it "
                                   "was stopped")))

    def abandon(self, node: SubNode, why: str) -> None:
        """Stop waiting for a job: it ends as lost (outcome unknown)."""
        greenlet = self.greenlets.get(node)
        if greenlet is not None:
            greenlet.kill(ConnectionLost(why), block=False)
