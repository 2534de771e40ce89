"""The run loops: connecting, queue and broadcast mode.

The only module that spawns greenlets. A loop is a tick of small named steps
(reap finished jobs, take entries for the free sub-nodes, start them, wait for
something to happen), driven by events that job greenlets and the Ctrl-c
handler put on one queue. Queue and broadcast mode differ only in which
sub-nodes a taken job goes to and in what a finished step means.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import gevent
import gevent.queue
from gevent.lock import BoundedSemaphore
from gevent.threadpool import ThreadPool

from pegasus import executor, expand, sshconfig
from pegasus.errors import ExitStatus, HostError, HostsUnreachable, InputError
from pegasus.job import run_job
from pegasus.model import Job, Result, SubNode
from pegasus.output import Sink
from pegasus.queuefile import QueueFile
from pegasus.scheduler import Scheduler

CONNECTS_PER_HOST = 8  # below sshd's MaxStartups (10): no random drops
POLL_SECONDS = 0.25  # how often an idle or blocked queue file is looked at


# ---------------------------------------------------------------- connecting

def connect_all(nodes: Sequence[SubNode], ssh_config: Optional[str]) -> Dict[SubNode, object]:
    """One executor per sub-node; all connections opened in parallel."""
    remote = [n for n in nodes if not n.is_local]
    targets = _resolve_all(list(dict.fromkeys(n.hostname for n in remote)), ssh_config)
    limits = {name: BoundedSemaphore(CONNECTS_PER_HOST) for name in targets}

    def one(node: SubNode):
        with limits[node.hostname]:
            try:
                return executor.connect(targets[node.hostname])
            except HostError as err:
                return err

    jobs = {node: gevent.spawn(one, node) for node in remote}
    gevent.joinall(list(jobs.values()))
    made = {node: g.value for node, g in jobs.items()}
    return _all_or_nothing(nodes, made)


def _resolve_all(names: List[str], ssh_config: Optional[str]) -> Dict[str, object]:
    """`ssh -G` for every host name, a few at a time in threads."""
    if not names:
        return {}
    pool = ThreadPool(min(8, len(names)))
    try:
        return dict(zip(names, pool.map(lambda n: sshconfig.resolve(n, ssh_config), names)))
    finally:
        pool.kill()


def _all_or_nothing(nodes, made) -> Dict[SubNode, object]:
    failed = list({str(v): v for v in made.values() if isinstance(v, HostError)}.values())
    if failed:
        close_all(v for v in made.values() if not isinstance(v, HostError))
        raise HostsUnreachable(failed)
    local = executor.LocalExecutor()
    return {node: made.get(node, local) for node in nodes}


def close_all(executors) -> None:
    for ex in executors:
        ex.close()


# ---------------------------------------------------------------- the loop

@dataclass
class Run:
    nodes: List[SubNode]
    executors: Dict[SubNode, object]
    queue: QueueFile
    sink: Sink
    daemon: bool = False
    error_aborts: bool = False
    check_cache: dict = field(default_factory=dict)

    def check(self, job: Job) -> None:
        expand.check_job(job, self.nodes, self.check_cache)


class Loop:
    """What both modes share: events, taking, stopping, the exit status."""

    def __init__(self, run: Run):
        self.run = run
        self.events: gevent.queue.Queue = gevent.queue.Queue()
        self.scheduler = Scheduler(run.nodes)
        self.results: List[Result] = []
        self.cancelled = False
        self.aborted = False  # broadcast -e: a step failed
        self.error: Optional[InputError] = None
        self.seen_signature = None  # the queue file as last found empty or bad
        self.empty = False

    def loop(self) -> ExitStatus:
        handler = gevent.signal_handler(signal.SIGINT, self.events.put, ("cancel",))
        try:
            while True:
                self.reap(block=False)
                if self.may_take():
                    self.take()
                if self.finished():
                    break
                self.reap(block=True)
        finally:
            handler.cancel()
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

    # -- steps

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
        if event[0] == "cancel":
            return self.cancel()
        _, node, result = event
        self.scheduler.finish(node)
        self.results.append(result)
        if result.error is not None and result.error.startswith("connection lost"):
            self.scheduler.take_down(node)
        if not self.scheduler.running:
            self.step_done()

    def may_take(self) -> bool:
        if self.cancelled or self.aborted or (self.error is not None and not self.run.daemon):
            return False
        if not self.targets():
            return False
        return self.seen_signature is None or self.run.queue.signature() != self.seen_signature

    def take(self) -> None:
        targets = self.targets()
        labels = self.labels(targets)
        try:
            taken = self.run.queue.take(labels, self.run.check)
        except InputError as err:
            return self.stop_for(err)
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
            result = run_job(node, job, self.run.executors[node], self.run.sink)
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
        if not self.scheduler.free():
            self.run.sink.message("no usable sub-node is left; stopping")
            return True
        return self.empty and not self.run.daemon

    def wait_seconds(self) -> Optional[float]:
        if self.cancelled or not self.targets():
            return None  # only a finishing job can change anything
        return POLL_SECONDS

    # -- stopping

    def cancel(self) -> None:
        if self.cancelled:
            self.run.sink.message("already stopping; waiting for "
                                  f"{self.scheduler.running} running job(s)")
            return
        self.cancelled = True
        self.run.sink.message(
            "Ctrl-c: no new jobs will start and the queue file is left as it is; "
            f"waiting for {self.scheduler.running} running job(s) to finish")

    def stop_for(self, err: InputError) -> None:
        if self.error is None or str(err) != str(self.error):
            tail = ("waiting for it to be fixed" if self.run.daemon else
                    "no more entries are taken; fix it and run Pegasus again")
            self.run.sink.message(f"{err}\n(this entry stays in the queue; {tail})")
        self.error = err
        self.seen_signature = self.run.queue.signature()

    def report(self) -> ExitStatus:
        self.summary("interrupted by Ctrl-c" if self.cancelled else None)
        if self.cancelled:
            return ExitStatus.INTERRUPTED
        if self.error is not None:
            return ExitStatus.BAD_INPUT
        if any(not r.ok for r in self.results):
            return ExitStatus.JOB_FAILED
        return ExitStatus.OK


# ---------------------------------------------------------------- queue mode

class QueueLoop(Loop):
    """Each job once, on the next free sub-node."""

    def targets(self) -> List[SubNode]:
        return self.scheduler.free()

    def labels(self, targets: List[SubNode]) -> List[str]:
        return [node.label for node in targets]

    def assign(self, targets, jobs):
        return list(zip(targets, jobs))


# ---------------------------------------------------------------- broadcast mode

@dataclass
class Step:
    job: Job
    results: List[Result] = field(default_factory=list)

    @property
    def failed(self) -> List[Result]:
        return [r for r in self.results if not r.ok]


class BroadcastLoop(Loop):
    """Each job on every sub-node; the next only when all have finished."""

    def __init__(self, run: Run):
        super().__init__(run)
        self.steps: List[Step] = []
        self.step_start = 0  # index in self.results where the step began

    def targets(self) -> List[SubNode]:
        return [] if self.scheduler.running else self.scheduler.free()

    def labels(self, targets: List[SubNode]) -> List[str]:
        return [f"broadcast to {len(targets)} sub-node" + ("s" if len(targets) != 1 else "")]

    def assign(self, targets, jobs):
        self.steps.extend(Step(job) for job in jobs)  # at most one job
        self.step_start = len(self.results)
        return [(node, job) for job in jobs for node in targets]

    def step_done(self) -> None:
        step = self.steps[-1]
        step.results = self.results[self.step_start:]
        self.run.sink.step_report(len(self.steps), step.results)
        if step.failed and self.run.error_aborts:
            self.aborted = True
            self.run.sink.message(f"--error-aborts: step {len(self.steps)} failed, "
                                  "so no more entries are taken")

    def summary(self, extra: Optional[str]) -> None:
        self.run.sink.broadcast_summary([s.results for s in self.steps], extra)


def queue_mode(run: Run) -> ExitStatus:
    return QueueLoop(run).loop()


def broadcast_mode(run: Run) -> ExitStatus:
    return BroadcastLoop(run).loop()
