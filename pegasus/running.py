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
from typing import Dict, List, NamedTuple, Optional, Tuple

import gevent
import gevent.queue

from pegasus.errors import WAITS_FOR_FIX, HostError, InputError
from pegasus.events import JobDone
from pegasus.executor import KILL_AFTER, ConnectionLost
from pegasus.halt import Policy
from pegasus.hook import Hook
from pegasus.hostswatch import Source
from pegasus.job import NO_LOG, run_job
from pegasus.joblogs import JobLogs
from pegasus.model import TIMED_OUT_STATUS, Job, Outcome, Result, SubNode
from pegasus.options import format_duration
from pegasus.output import Sink
from pegasus.queuefile import Check, LockWaitAborted, QueueFile
from pegasus.records import Records
from pegasus.retry import Defaults, Pending, left_entry, next_attempt, retrying_words, wants
from pegasus.words import plural

GIVE_UP_AFTER = 3  # seconds after a stopped job's KILL before Pegasus stops waiting for it


class StopFlag:
    """What ends a take's wait for the queue lock: a signal (``requested``, set
    by the handler at once) or any event for the loop (its queue, ``events``: a
    job ended, ``pegasus kill``, a host lost), which the loop then acts on
    before it takes again. Someone editing in lock mode holds the lock for
    minutes. A record's write never gives way (``QueueFile.locked``)."""

    def __init__(self):
        self.requested = False
        self.events: gevent.queue.Queue = gevent.queue.Queue()  # the loop's

    def wait(self, seconds: float) -> None:
        """Waiting for the queue lock (someone edits): give up on a signal or an event."""
        if self.requested or not self.events.empty():
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
    retries: Defaults = Defaults()  # --retries, --retry-lost
    hosts_source: Optional[Source] = None  # a daemon's hosts.yaml, read again when it changes
    skipped: Tuple[str, ...] = ()  # --skip-unreachable: the hosts left out at start
    rerun: str = "pegasus q"  # ``pegasus b -Q FILE``: how to run again (failed-hosts.txt)


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

    def hosts_changed(self) -> None:
        """The sub-nodes changed: the head may have a place now, or be bad or good."""
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


class Started(NamedTuple):
    """A running job (keyed by its sub-node, which holds its slots): what, since
    when (epoch s)."""
    job: Job
    at: float


@dataclass(frozen=True)
class Stopped:
    """Why Pegasus stopped a job: its timeout ran out (``timeout``, seconds: it
    may be retried), ``pegasus kill`` (``killed``), or neither (Ctrl-c, SIGTERM,
    ``--halt now``: not retried)."""
    timeout: Optional[float] = None
    killed: bool = False

    def add(self, other: "Stopped") -> "Stopped":
        return Stopped(self.timeout if self.timeout is not None else other.timeout,
                       self.killed or other.killed)


class Jobs:
    """The running jobs: one greenlet each, stopped, timed out or given up on by
    sub-node. ``timeout``: seconds a job without its own ``timeout:`` may run;
    ``retries``: the defaults of jobs without their own (None: no job is retried)."""

    def __init__(self, hosts, records: Records, sink: Sink, post,
                 timeout: Optional[float] = None, logs: Optional[JobLogs] = None,
                 retries: Optional[Defaults] = Defaults()):
        self.hosts, self.records, self.sink, self.post = hosts, records, sink, post
        self.timeout, self.logs, self.retries = timeout, logs, retries
        self.greenlets: Dict[SubNode, gevent.Greenlet] = {}
        self.timers: Dict[SubNode, List[gevent.Greenlet]] = {}  # ended with the job
        self.stopped: Dict[SubNode, Stopped] = {}  # the jobs Pegasus stopped, and why
        self.running: Dict[SubNode, Started] = {}

    def start(self, node: SubNode, job: Job) -> None:
        self.running[node] = Started(job, time.time())
        self.greenlets[node] = gevent.spawn(self._run, node, job)
        seconds = job.timeout or self.timeout
        if seconds:
            self.timers[node] = [gevent.spawn_later(seconds, self._expire, node, seconds)]

    def _run(self, node: SubNode, job: Job) -> None:
        log = NO_LOG if self.logs is None else self.logs.start(job.id, node)
        if job.attempt > 1:  # the attempts share the job's log
            log.write(f"=== attempt {job.attempt} on {node.label} ===\n".encode())
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
        self.sink.message(f"{node.label} timed out after {format_duration(seconds)}: "
                          f"stopping it (TERM, then KILL {KILL_AFTER:g} s later)")
        self.stop([node], Stopped(timeout=seconds))

    def kill(self, nodes: List[SubNode]) -> None:
        """``pegasus kill``: stop these jobs as a timeout does; they were killed by user."""
        self.stop(nodes, Stopped(killed=True))

    def _verdict(self, node: SubNode, result: Result) -> Result:
        """A job stopped by its timeout (it did not succeed first) timed out: 124;
        one stopped by ``pegasus kill`` was killed by user. A failed attempt with
        retries left runs again, unless Pegasus stopped it for another reason
        than its timeout (Ctrl-c, SIGTERM, --halt now, ``pegasus kill``)."""
        why = self.stopped.get(node)
        ran_on = why is not None and result.error is None and result.exit_status != 0
        if ran_on and why.killed:
            return replace(result, killed=True)
        if ran_on and why.timeout is not None:
            result = replace(result, exit_status=TIMED_OUT_STATUS, timed_out=why.timeout)
        if self.retries is not None and (why is None or why.timeout is not None) \
                and wants(result, self.retries):
            result = replace(result, retrying=True)
        return result

    def ended(self, node: SubNode) -> None:
        self.hosts.ended(node)  # a sub-node gone from hosts.yaml closes its connection
        self.greenlets.pop(node, None)
        self.running.pop(node, None)
        self.stopped.pop(node, None)
        for timer in self.timers.pop(node, ()):
            timer.kill(block=False)

    def stop_all(self, nodes: List[SubNode]) -> None:
        """Stop the running jobs (second Ctrl-c, SIGTERM, ``--halt now``), saying so."""
        if nodes:  # nothing to say when none runs: the summary follows at once
            self.sink.message(f"stopping {plural(len(nodes), 'running job')}")
        self.stop(nodes)

    def stop(self, nodes: List[SubNode], why: Optional["Stopped"] = None) -> None:
        """The one way Pegasus ends a job: its cancel hook (``cancel:``) on its
        sub-node first, if it has one; then TERM to its process group, KILL
        later; then stop waiting for it. A job stopped already keeps being
        stopped; the reasons add up (``Stopped.add``)."""
        why = why or Stopped()
        for node in nodes:
            earlier = self.stopped.get(node)
            self.stopped[node] = why if earlier is None else earlier.add(why)
            if earlier is not None:
                continue
            started = self.running.get(node)
            hook = None if started is None else Hook.of(started.job, node, self.sink)
            if hook is None:
                self._terminate(node)
            else:  # a greenlet of its own, bounded: never waited for by the loop
                gevent.spawn(self._hook_first, hook, node, self.greenlets.get(node))

    def _hook_first(self, hook: Hook, node: SubNode, job) -> None:
        """Run the hook; then TERM the job if it is still the one running there."""
        hook.run(self.hosts.executor(node))
        if job is not None and self.greenlets.get(node) is job and not job.dead:
            self._terminate(node)

    def _terminate(self, node: SubNode) -> None:
        executor = self.hosts.executor(node)
        gevent.spawn(executor.cancel)
        self.timers.setdefault(node, []).extend((
            gevent.spawn_later(KILL_AFTER, executor.kill),  # local; remote watchdogs do their own
            gevent.spawn_later(KILL_AFTER + GIVE_UP_AFTER, self._give_up, node,
                               time.monotonic())))

    def _give_up(self, node: SubNode, since: float) -> None:
        """A job stopped this long ago and not ended is lost (outcome unknown), unless
        its output was held back meanwhile (the reader of Pegasus's stdout paused):
        then Pegasus's own output kept it, not the job. Asked again later."""
        if self.sink.output_held_since(since):
            self.timers.setdefault(node, []).append(
                gevent.spawn_later(GIVE_UP_AFTER, self._give_up, node, time.monotonic()))
            return
        self.abandon(node, f"no answer {KILL_AFTER + GIVE_UP_AFTER:g} s after it was "
                           "stopped")

    def abandon(self, node: SubNode, why: str) -> None:
        """Stop waiting for a job: it ends as lost (outcome unknown)."""
        greenlet = self.greenlets.get(node)
        if greenlet is not None:
            greenlet.kill(ConnectionLost(why), block=False)


class Retries:
    """Jobs waiting for their next attempt (``retries:``, queue mode): how each
    attempt is recorded, where the next goes, and at the end of a run the jobs
    that never got one, back at the head of the queue."""

    def __init__(self, records: Records, sink: Sink, defaults: Defaults):
        self.records, self.sink, self.defaults = records, sink, defaults
        self.pending = Pending()

    def __bool__(self) -> bool:
        return bool(self.pending)

    def settle(self, result: Result) -> Result:
        """Record how an attempt ended (``Records.settle``). A failed one with retries
        left waits for its next attempt (journaled with the entry a crash before it
        puts back); so does an attempt that could not be sent (never launched: the
        ``retry`` record before it stands). A PegasusError: not recorded (a full disk)."""
        job = result.job
        if result.outcome is Outcome.NOT_STARTED and job.attempt > 1:
            self.pending.add(job)
            return replace(result, retrying=True)
        if not result.retrying:
            return self.records.settle(result)
        self.sink.message(retrying_words(result, self.defaults))
        again = next_attempt(result)
        self.pending.add(again)  # first: a journal that cannot be written loses no job
        return self.records.settle(result, left_entry(again, self.defaults))

    def place(self, place) -> List:
        return self.pending.place(place)

    def give_back(self) -> int:
        """The run ends: jobs still waiting go back to the head of the queue, with
        the retries they have left (raises a PegasusError if it cannot be written)."""
        jobs = self.pending.take_all()
        if jobs:
            self.sink.message(f"{plural(len(jobs), 'job')} waiting to run again "
                              f"{'goes' if len(jobs) == 1 else 'go'} back to the head of "
                              "the queue, with the retries left")
            self.records.put_back(jobs, [left_entry(job, self.defaults) for job in jobs])
        return len(jobs)
