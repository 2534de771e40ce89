"""The run loop that queue mode and broadcast mode (``broadcast``) share.

With ``connecting``, the only code that spawns greenlets. A loop is a tick of
small named steps (reap what happened, take entries for the free sub-nodes
and start them, wait for the next event), driven by typed events (``events``)
that job greenlets, reconnecting greenlets and the signal handlers put on one
queue. Its state is one ``State``. Queue and broadcast mode differ only in
which sub-nodes a taken job goes to and in what a finished step means:
``QueueLoop`` here, ``BroadcastLoop`` in ``broadcast``.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Dict, List, Optional, Tuple

import gevent
import gevent.queue

from pegasus.connecting import Hosts
from pegasus.errors import ExitStatus, InputError, StorageError
from pegasus.events import (HostBack, HostRefused, HostSilent, JobDone, OutputLost, Signal,
                            Signalled)
from pegasus.executor import KILL_AFTER, ConnectionLost
from pegasus.job import run_job
from pegasus.model import Job, Outcome, Result, SubNode
from pegasus.outlet import describe
from pegasus.output import Sink
from pegasus.queuefile import Check, LockWaitAborted, QueueFile
from pegasus.records import Records
from pegasus.scheduler import Scheduler

POLL_SECONDS = 0.25  # how often an idle or blocked queue file is looked at
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
    connector: object  # connecting.Connector (or a fake): reconnects lost hosts
    queue: QueueFile  # built with ``wait=stop.wait``
    records: Records
    sink: Sink
    stop: StopFlag
    check: Check  # expand.checker(nodes): raises InputError for a job that cannot run
    daemon: bool = False
    error_aborts: bool = False


class State(Enum):
    RUNNING = "taking entries as sub-nodes free up"
    ABORTING = "taking nothing more, running jobs finish (see Loop.abort_status)"
    STOPPING = "Ctrl-c: taking nothing more, waiting for running jobs"
    TERMINATING = "second Ctrl-c or SIGTERM: running jobs are being stopped"


class QueueHead:
    """What the loop knows of the queue's head: empty, blocked by a bad entry.

    An empty or blocked queue is looked at again only once the file changed.
    """

    def __init__(self, queue: QueueFile, sink: Sink, daemon: bool):
        self.queue, self.sink, self.daemon = queue, sink, daemon
        self.blocked: Optional[InputError] = None  # the bad entry at the head
        self.empty = False
        self.seen_signature = None  # the file as last found empty or blocked

    def may_have_jobs(self) -> bool:
        if self.blocked is not None and not self.daemon:
            return False
        return self.seen_signature is None or self.queue.signature() != self.seen_signature

    def took(self, emptied: bool, error: Optional[InputError]) -> None:
        """After a take: fewer jobs than asked for means the queue is empty."""
        if error is not None:
            return self.block(error)
        self.blocked, self.empty = None, emptied
        self.seen_signature = self.queue.signature() if emptied else None

    def block(self, err: InputError) -> None:
        """A bad entry at the head: say so once; a daemon waits for the fix."""
        if self.blocked is None or str(err) != str(self.blocked):
            tail = ("waiting for it to be fixed" if self.daemon else
                    "no more entries are taken; fix it and run Pegasus again")
            self.sink.message(f"{err}\n(this entry stays in the queue; {tail})")
        self.blocked = err
        self.seen_signature = self.queue.signature()

    def done(self) -> bool:
        """Nothing more to take, for a run that is not a daemon."""
        return not self.daemon and (self.blocked is not None or self.empty)


class Jobs:
    """The running jobs: one greenlet each, stopped or given up on by sub-node."""

    def __init__(self, hosts: Hosts, records: Records, sink: Sink, post):
        self.hosts, self.records, self.sink, self.post = hosts, records, sink, post
        self.greenlets: Dict[SubNode, gevent.Greenlet] = {}

    def start(self, node: SubNode, job: Job) -> None:
        self.greenlets[node] = gevent.spawn(self._run, node, job)

    def _run(self, node: SubNode, job: Job) -> None:
        try:
            result = run_job(node, job, self.hosts.executor(node), self.sink,
                             lambda: self.records.launching(job, node.label))
        except Exception as err:  # noqa: BLE001 - a bug must not hang the loop
            result = Result(node, job, job.command, error=f"internal error: {err!r}")
        self.post(JobDone(result))

    def ended(self, node: SubNode) -> None:
        self.greenlets.pop(node, None)

    def stop(self, nodes: List[SubNode]) -> None:
        """TERM to each job's process group, KILL later; then stop waiting for it."""
        for node in nodes:
            executor = self.hosts.executor(node)
            gevent.spawn(executor.cancel)
            gevent.spawn_later(KILL_AFTER, executor.kill)  # local; remote watchdogs do their own
            gevent.spawn_later(KILL_AFTER + GIVE_UP_AFTER, self.abandon, node,
                               f"no answer {KILL_AFTER + GIVE_UP_AFTER} s after it was stopped")

    def abandon(self, node: SubNode, why: str) -> None:
        """Stop waiting for a job: it ends as lost (outcome unknown)."""
        greenlet = self.greenlets.get(node)
        if greenlet is not None:
            greenlet.kill(ConnectionLost(why), block=False)


class Loop:
    """What both modes share: events, taking, stopping, the exit status."""

    def __init__(self, run: Run):
        self.run = run
        self.events: gevent.queue.Queue = gevent.queue.Queue()
        self.scheduler = Scheduler(run.nodes)
        self.hosts = Hosts(run.nodes, run.executors, run.connector, self.scheduler,
                           run.sink, self.events.put)
        self.state = State.RUNNING
        self.stop_signal = Signal.CTRL_C  # the signal that stopped the run
        self.abort_status = ExitStatus.JOB_FAILED  # why ABORTING: a failed step, lost output
        self.failed = 0  # jobs that did not succeed
        self.head = QueueHead(run.queue, run.sink, run.daemon)
        self.jobs = Jobs(self.hosts, run.records, run.sink, self.events.put)

    def loop(self) -> ExitStatus:
        with _side_tasks(self):
            while True:
                self.reap(block=False)
                if self.may_take():
                    self.take()
                if self.finished():
                    break
                self.reap(block=True)
        return self.report()

    # -- what the modes define

    def targets(self) -> List[SubNode]:
        """The sub-nodes the next take is for, in order."""
        raise NotImplementedError

    def has_targets(self) -> bool:
        """Whether ``targets()`` would name any (cheaply)."""
        raise NotImplementedError

    def labels(self, targets: List[SubNode]) -> List[str]:
        """One consumed.yaml label per job to take."""
        raise NotImplementedError

    def assign(self, targets: List[SubNode], jobs) -> List[Tuple[SubNode, Job]]:
        raise NotImplementedError

    def step_done(self) -> None:
        """Called when no job is running any more."""

    def record(self, result: Result) -> None:
        """Keep what the summary needs of a finished job."""
        raise NotImplementedError

    def summary(self, extra: Optional[str]) -> None:
        raise NotImplementedError

    def host_lost(self, node: SubNode) -> None:
        self.hosts.lose_host(node)

    # -- steps

    def signalled(self, which: Signal) -> None:
        self.run.stop.requested = True  # seen at once, even while waiting for the lock
        self.events.put(Signalled(which))

    def reap(self, block: bool) -> None:
        timeout = self.wait_seconds() if block else 0
        try:
            event = self.events.get(timeout=timeout) if block else self.events.get_nowait()
        except gevent.queue.Empty:
            return
        self.handle(event)
        while not self.events.empty():
            self.handle(self.events.get_nowait())

    def handle(self, event) -> None:
        if isinstance(event, Signalled):
            return self.on_signal(event.signal)
        if isinstance(event, (HostBack, HostRefused)):
            return self.hosts.back(event)
        if isinstance(event, OutputLost):
            return self.output_lost(event.error)
        if isinstance(event, HostSilent):
            return self.host_silent(event)
        self.job_done(event.result)

    def job_done(self, result: Result) -> None:
        self.scheduler.finish(result.node)
        self.jobs.ended(result.node)
        try:
            result = self.run.records.settle(result)
        except StorageError as err:
            self.storage_failed(err)
        self.failed += not result.ok
        self.record(result)
        if result.outcome in (Outcome.NOT_STARTED, Outcome.LOST):
            self.host_lost(result.node)
        if not self.scheduler.running:
            self.step_done()

    def host_silent(self, event: HostSilent) -> None:
        """A hung host: give up on its jobs (outcome unknown) and on the host for now."""
        nodes = [n for n in self.run.nodes if n.hostname == event.hostname]
        running = [n for n in nodes if self.scheduler.is_busy(n)]
        self.hosts.not_responding(event.hostname, event.seconds, len(running))
        for node in running:
            self.jobs.abandon(node, f"host not responding for {event.seconds:.0f} s")
        for node in nodes:
            if not self.scheduler.is_down(node):
                self.host_lost(node)

    def may_take(self) -> bool:
        if self.state is not State.RUNNING or self.run.stop.requested:
            return False
        return self.has_targets() and self.head.may_have_jobs()

    def take(self) -> None:
        targets = self.targets()
        labels = self.labels(targets)
        try:
            taken = self.run.records.take(labels, self.run.check)
        except InputError as err:
            return self.head.block(err)
        except StorageError as err:
            return self.storage_failed(err)
        except LockWaitAborted:
            return None
        for node, job in self.assign(targets, taken.jobs):
            self.start(node, job)
        self.head.took(len(taken.jobs) < len(labels), taken.error)

    def start(self, node: SubNode, job: Job) -> None:
        self.scheduler.start([node])
        self.jobs.start(node, job)

    def finished(self) -> bool:
        if self.scheduler.running:
            return False
        if self.state is not State.RUNNING:
            return True
        if self.head.done():
            return True
        if not self.scheduler.has_free() and not self.hosts.reconnecting:
            self.run.sink.message("no usable sub-node is left; stopping")
            return True
        return False

    def wait_seconds(self) -> Optional[float]:
        if self.state is not State.RUNNING or not self.has_targets():
            return None  # only a finishing job can change anything
        return POLL_SECONDS

    # -- stopping

    def on_signal(self, which: Signal) -> None:
        if which is Signal.SIGTERM:
            self.stop_signal = Signal.SIGTERM
            return self.terminate()
        if self.state in (State.STOPPING, State.TERMINATING):
            return self.terminate()
        self.state = State.STOPPING
        running = self.scheduler.running
        self.run.sink.message(
            "Ctrl-c: no new jobs will start and the queue file is left as it is; " +
            (f"waiting for {running} running job(s) to finish (Ctrl-c again stops them)"
             if running else "no job is running"))

    def terminate(self) -> None:
        """Stop every running job: TERM to its process group, KILL later."""
        if self.state is State.TERMINATING:
            return
        self.state = State.TERMINATING
        running = list(self.scheduler.busy)
        self.run.sink.message(f"stopping {len(running)} running job(s)")
        self.jobs.stop(running)

    def abort(self, why: str, status: ExitStatus = ExitStatus.JOB_FAILED) -> None:
        """Take nothing more; running jobs finish (``--error-aborts``, lost output)."""
        if self.state is State.RUNNING:
            self.state, self.abort_status = State.ABORTING, status
            self.run.sink.message(why)

    def storage_failed(self, err: StorageError) -> None:
        self.abort(f"{err}\n(no new jobs will start; running jobs finish: their records "
                   "are kept where they can still be written)", ExitStatus.IO_ERROR)

    def output_lost(self, err: OSError) -> None:
        running = self.scheduler.running
        self.abort(f"cannot write to standard output ({describe(err)}): no new jobs will "
                   "start and the queue file is left as it is" +
                   (f"; waiting for {running} running job(s) to finish" if running else ""),
                   ExitStatus.IO_ERROR)

    def report(self) -> ExitStatus:
        signalled = self.state in (State.STOPPING, State.TERMINATING)
        why = {Signal.CTRL_C: "interrupted by Ctrl-c",
               Signal.SIGTERM: "terminated by SIGTERM"}[self.stop_signal]
        self.summary(why if signalled else None)
        return _exit_status(self)


def _exit_status(loop: Loop) -> ExitStatus:
    """A signal; else bad input at the head; else why it aborted; else the jobs."""
    if loop.state in (State.STOPPING, State.TERMINATING):
        return loop.stop_signal.value
    if loop.head.blocked is not None:
        return ExitStatus.BAD_INPUT
    if loop.state is State.ABORTING:
        return loop.abort_status
    return ExitStatus.JOB_FAILED if loop.failed else ExitStatus.OK


@contextmanager
def _side_tasks(loop: Loop):
    """While the loop runs: signal handlers, heartbeats, stdout's writer, reconnects."""
    handlers = [gevent.signal_handler(signal.SIGINT, loop.signalled, Signal.CTRL_C),
                gevent.signal_handler(signal.SIGTERM, loop.signalled, Signal.SIGTERM)]
    beating = gevent.spawn(loop.hosts.watch, lambda: list(loop.scheduler.busy))
    outlet = loop.run.sink.outlet
    draining = gevent.spawn(outlet.drain, lambda err: loop.events.put(OutputLost(err)))
    try:
        if outlet.error is not None:
            loop.output_lost(outlet.error)
        loop.hosts.start()
        yield
    finally:
        for handler in handlers:
            handler.cancel()
        loop.hosts.stop()
        beating.kill()
        loop.hosts.close()
        outlet.flush()
        draining.kill()


# ---------------------------------------------------------------- queue mode

class QueueLoop(Loop):
    """Each job once, on the next free sub-node."""

    def __init__(self, run: Run):
        super().__init__(run)
        self.failures: List[Result] = []  # the others are counted, not kept
        self.succeeded = 0

    def record(self, result: Result) -> None:
        if result.ok:
            self.succeeded += 1
        else:
            self.failures.append(result)

    def summary(self, extra: Optional[str]) -> None:
        self.run.sink.summary(self.failures, extra, len(self.failures) + self.succeeded)

    def targets(self) -> List[SubNode]:
        return self.scheduler.free()

    def has_targets(self) -> bool:
        return self.scheduler.has_free()

    def labels(self, targets: List[SubNode]) -> List[str]:
        return [node.label for node in targets]

    def assign(self, targets, jobs):
        return list(zip(targets, jobs))


def queue_mode(run: Run) -> ExitStatus:
    return QueueLoop(run).loop()
