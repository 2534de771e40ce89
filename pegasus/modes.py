"""The run loop that queue mode and broadcast mode (``broadcast``) share.

With ``connecting``, the only code that spawns greenlets. A loop is a tick of
small named steps (reap finished jobs, take entries for the free sub-nodes,
start them, wait for something to happen), driven by events that job
greenlets, reconnecting greenlets and the signal handlers put on one queue.
Queue and broadcast mode differ only in which sub-nodes a taken job goes to
and in what a finished step means: ``QueueLoop`` here, ``BroadcastLoop`` in
``broadcast``.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import gevent
import gevent.queue

from pegasus import expand
from pegasus.connecting import Connector
from pegasus.errors import ExitStatus, HostError, InputError
from pegasus.executor import HEARTBEAT, KILL_AFTER, ConnectionLost
from pegasus.job import run_job
from pegasus.journal import Journal
from pegasus.model import Job, Outcome, Result, SubNode
from pegasus.output import Sink
from pegasus.queuefile import LockWaitAborted, QueueFile
from pegasus.scheduler import Scheduler

POLL_SECONDS = 0.25  # how often an idle or blocked queue file is looked at


# ---------------------------------------------------------------- the loop

@dataclass
class Run:
    nodes: List[SubNode]
    executors: Dict[SubNode, object]
    queue: QueueFile
    sink: Sink
    daemon: bool = False
    error_aborts: bool = False
    journal: Optional[Journal] = None
    connector: Optional[Connector] = None
    check_cache: dict = field(default_factory=dict)

    def check(self, job: Job) -> None:
        expand.check_job(job, self.nodes, self.check_cache)


class Loop:
    """What both modes share: events, taking, stopping, the exit status."""

    launched_when_taken = False  # the journal records a job's launch with its take

    def __init__(self, run: Run):
        self.run = run
        self.events: gevent.queue.Queue = gevent.queue.Queue()
        self.scheduler = Scheduler(run.nodes)
        self.results: List[Result] = []
        self.cancelled = False
        self.terminated = False  # second Ctrl-c or SIGTERM: running jobs are stopped
        self.signal_status = ExitStatus.INTERRUPTED
        self.aborted = False  # broadcast -e: a step failed
        self.reconnecting: Dict[str, gevent.Greenlet] = {}
        self.stop_requested = False
        run.queue.wait = self.lock_wait  # other greenlets go on meanwhile
        self.error: Optional[InputError] = None
        self.seen_signature = None  # the queue file as last found empty or bad
        self.empty = False

    def loop(self) -> ExitStatus:
        handlers = [gevent.signal_handler(signal.SIGINT, self.signalled, "cancel"),
                    gevent.signal_handler(signal.SIGTERM, self.signalled, "terminate")]
        beating = gevent.spawn(self.heartbeats)
        try:
            self.start_reconnecting(n for n in self.run.nodes if n not in self.run.executors)
            while True:
                self.reap(block=False)
                if self.may_take():
                    self.take()
                if self.finished():
                    break
                self.reap(block=True)
        finally:
            for handler in handlers:
                handler.cancel()
            gevent.killall(list(self.reconnecting.values()) + [beating])
        return self.report()

    # -- what the modes define

    def targets(self) -> List[SubNode]:
        """The sub-nodes the next pop is for, in order."""
        raise NotImplementedError

    def labels(self, targets: List[SubNode]) -> List[str]:
        """One consumed.yaml label per job to take."""
        raise NotImplementedError

    def assign(self, targets: List[SubNode], jobs) -> List[Tuple[SubNode, Job]]:
        raise NotImplementedError

    def step_done(self) -> None:
        """Called when no job is running any more."""

    def summary(self, extra: Optional[str]) -> None:
        self.run.sink.summary(self.results, extra)

    def record(self, result: Result) -> None:
        """Keep a finished job's result for the reports."""
        self.results.append(result)

    # -- steps

    def signalled(self, kind: str) -> None:
        self.stop_requested = True  # seen at once, even while waiting for the lock
        self.events.put((kind,))

    def lock_wait(self, seconds: float) -> None:
        """Waiting for the queue lock (someone edits): give up on Ctrl-c."""
        if self.stop_requested:
            raise LockWaitAborted()
        gevent.sleep(seconds)

    def heartbeats(self) -> None:
        """Every running remote job hears from Pegasus once a second."""
        while True:
            gevent.sleep(HEARTBEAT)
            for node in list(self.scheduler.busy):
                try:
                    self.run.executors[node].heartbeat()
                except ConnectionLost:
                    pass  # its reader reports the lost connection

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
        kind = event[0]
        if kind == "cancel":
            return self.cancel()
        if kind == "terminate":
            self.signal_status = ExitStatus.TERMINATED
            return self.terminate()
        if kind == "up":
            return self.host_back(event[1], event[2])
        _, node, result = event
        self.scheduler.finish(node)
        self.record(result)
        self.settle(result)
        if not self.scheduler.running:
            self.step_done()

    def settle(self, result: Result) -> None:
        """Put back a job that never started; record one whose outcome is unknown."""
        outcome, run = result.outcome, self.run
        if outcome is Outcome.NOT_STARTED:
            self.put_back(result)
        elif outcome in (Outcome.LOST, Outcome.ERROR):
            run.queue.add_interrupted(result.job, result.node.label, result.error,
                                      run.journal)
        if outcome in (Outcome.NOT_STARTED, Outcome.LOST):
            self.host_lost(result.node)

    def put_back(self, result: Result) -> None:
        self.run.queue.put_back([result.job], self.run.journal)

    def may_take(self) -> bool:
        if self.stop_requested or self.cancelled or self.aborted or (self.error is not None and not self.run.daemon):
            return False
        if not self.targets():
            return False
        return self.seen_signature is None or self.run.queue.signature() != self.seen_signature

    def take(self) -> None:
        targets = self.targets()
        labels = self.labels(targets)
        try:
            taken = self.run.queue.take(labels, self.run.check, self.run.journal,
                                        launching=self.launched_when_taken)
        except InputError as err:
            return self.stop_for(err)
        except LockWaitAborted:
            return None
        for node, job in self.assign(targets, taken.jobs):
            self.start(node, job)
        if taken.error is not None:
            return self.stop_for(taken.error)
        self.error = None
        self.empty = len(taken.jobs) < len(labels)
        self.seen_signature = self.run.queue.signature() if self.empty else None

    def start(self, node: SubNode, job: Job) -> None:
        self.scheduler.start([node])
        gevent.spawn(self._job, node, job)

    def _job(self, node: SubNode, job: Job) -> None:
        try:
            result = run_job(node, job, self.run.executors[node], self.run.sink,
                             self.run.journal, self.launched_when_taken)
        except Exception as err:  # noqa: BLE001 - a bug must not hang the loop
            result = Result(node, job, job.command, error=f"internal error: {err!r}")
        self.events.put(("done", node, result))

    def finished(self) -> bool:
        if self.scheduler.running:
            return False
        if self.cancelled or self.aborted:
            return True
        if self.error is not None:
            return not self.run.daemon
        if self.empty and not self.run.daemon:
            return True
        if not self.scheduler.free() and not self.reconnecting:
            self.run.sink.message("no usable sub-node is left; stopping")
            return True
        return False

    def wait_seconds(self) -> Optional[float]:
        if self.cancelled or not self.targets():
            return None  # only a finishing job can change anything
        return POLL_SECONDS

    # -- hosts that come and go

    def host_lost(self, node: SubNode) -> None:
        """Its host gives no more jobs until a new connection is made."""
        if node.is_local or node.hostname in self.reconnecting:
            return
        siblings = [n for n in self.run.nodes if n.hostname == node.hostname]
        for sibling in siblings:
            self.scheduler.take_down(sibling)
        self.run.sink.message(f"host {node.hostname}: connection lost; its sub-nodes "
                              "take no more jobs; reconnecting in the background")
        self.start_reconnecting(siblings)

    def start_reconnecting(self, nodes) -> None:
        by_host: Dict[str, List[SubNode]] = {}
        for node in nodes:
            self.scheduler.take_down(node)
            by_host.setdefault(node.hostname, []).append(node)
        for host, group in by_host.items():
            self.reconnecting[host] = gevent.spawn(
                self.run.connector.reconnect, group, self.idle,
                lambda node, ex: self.events.put(("up", node, ex)))

    def idle(self, node: SubNode) -> bool:
        return node not in self.scheduler.busy

    def host_back(self, node: SubNode, executor) -> None:
        if isinstance(executor, HostError):
            self.reconnecting.pop(node.hostname, None)
            return self.run.sink.message(f"{executor}; it is left out for the rest "
                                         "of the run")
        old = self.run.executors.get(node)
        if old is not None:
            old.close()
        self.run.executors[node] = executor
        self.scheduler.bring_up(node)
        if all(n not in self.scheduler.down for n in self.run.nodes
               if n.hostname == node.hostname):
            self.reconnecting.pop(node.hostname, None)
            self.run.sink.message(f"host {node.hostname}: connected; taking jobs again")

    # -- stopping

    def cancel(self) -> None:
        if self.cancelled:
            return self.terminate()
        self.cancelled = True
        running = self.scheduler.running
        self.run.sink.message(
            "Ctrl-c: no new jobs will start and the queue file is left as it is; " +
            (f"waiting for {running} running job(s) to finish (Ctrl-c again stops them)"
             if running else "no job is running"))

    def terminate(self) -> None:
        """Stop every running job: TERM to its process group, KILL later."""
        self.cancelled = True
        if self.terminated:
            return
        self.terminated = True
        running = list(self.scheduler.busy)
        self.run.sink.message(f"stopping {len(running)} running job(s)")
        for node in running:
            executor = self.run.executors[node]
            gevent.spawn(executor.cancel)
            gevent.spawn_later(KILL_AFTER, executor.kill)  # local; remote watchdogs do their own

    def stop_for(self, err: InputError) -> None:
        if self.error is None or str(err) != str(self.error):
            tail = ("waiting for it to be fixed" if self.run.daemon else
                    "no more entries are taken; fix it and run Pegasus again")
            self.run.sink.message(f"{err}\n(this entry stays in the queue; {tail})")
        self.error = err
        self.seen_signature = self.run.queue.signature()

    def report(self) -> ExitStatus:
        why = {ExitStatus.INTERRUPTED: "interrupted by Ctrl-c",
               ExitStatus.TERMINATED: "terminated by SIGTERM"}[self.signal_status]
        self.summary(why if self.cancelled else None)
        if self.cancelled:
            return self.signal_status
        if self.error is not None:
            return ExitStatus.BAD_INPUT
        if any(not r.ok for r in self.results):
            return ExitStatus.JOB_FAILED
        return ExitStatus.OK


# ---------------------------------------------------------------- queue mode

class QueueLoop(Loop):
    """Each job once, on the next free sub-node."""

    succeeded = 0  # jobs that succeeded: counted, not kept (a daemon runs for days)
    launched_when_taken = True  # each job goes to the sub-node it was taken for

    def record(self, result: Result) -> None:
        if result.ok:
            self.succeeded += 1
        else:
            self.results.append(result)

    def summary(self, extra: Optional[str]) -> None:
        self.run.sink.summary(self.results, extra, len(self.results) + self.succeeded)

    def targets(self) -> List[SubNode]:
        return self.scheduler.free()

    def labels(self, targets: List[SubNode]) -> List[str]:
        return [node.label for node in targets]

    def assign(self, targets, jobs):
        return list(zip(targets, jobs))


def queue_mode(run: Run) -> ExitStatus:
    return QueueLoop(run).loop()
