"""The run loops: connecting, queue mode. The only module that spawns greenlets.

The queue loop is a tick of small named steps (reap finished jobs, take
entries for the free sub-nodes, start them, wait for something to happen),
driven by events that job greenlets and the Ctrl-c handler put on one queue.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

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


# ---------------------------------------------------------------- queue mode

@dataclass
class QueueRun:
    nodes: List[SubNode]
    executors: Dict[SubNode, object]
    queue: QueueFile
    sink: Sink
    daemon: bool = False
    check_cache: dict = field(default_factory=dict)

    def check(self, job: Job) -> None:
        expand.check_job(job, self.nodes, self.check_cache)


class QueueLoop:
    """Queue mode: each job once, on the next free sub-node."""

    def __init__(self, run: QueueRun):
        self.run = run
        self.events: gevent.queue.Queue = gevent.queue.Queue()
        self.scheduler = Scheduler(run.nodes)
        self.results: List[Result] = []
        self.cancelled = False
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
            self.cancel()
            return
        _, node, result = event
        self.scheduler.finish(node)
        self.results.append(result)
        if result.error is not None and result.error.startswith("connection lost"):
            self.scheduler.take_down(node)

    def may_take(self) -> bool:
        if self.cancelled or (self.error is not None and not self.run.daemon):
            return False
        if not self.scheduler.free():
            return False
        if self.seen_signature is not None:
            if self.run.queue.signature() == self.seen_signature:
                return False
        return True

    def take(self) -> None:
        free = self.scheduler.free()
        try:
            taken = self.run.queue.take([n.label for n in free], self.run.check)
        except InputError as err:
            return self.stop_for(err)
        for node, job in zip(free, taken.jobs):
            self.start(node, job)
        if taken.error is not None:
            return self.stop_for(taken.error)
        self.error = None
        self.empty = len(taken.jobs) < len(free)
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
        if self.cancelled:
            return True
        if self.error is not None:
            return not self.run.daemon
        if not self.scheduler.free():
            self.run.sink.message("no usable sub-node is left; stopping")
            return True
        return self.empty and not self.run.daemon

    def wait_seconds(self) -> Optional[float]:
        if self.cancelled or not self.scheduler.free():
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
        extra = "interrupted by Ctrl-c" if self.cancelled else None
        self.run.sink.summary(self.results, extra)
        if self.cancelled:
            return ExitStatus.INTERRUPTED
        if self.error is not None:
            return ExitStatus.BAD_INPUT
        if any(not r.ok for r in self.results):
            return ExitStatus.JOB_FAILED
        return ExitStatus.OK


def queue_mode(run: QueueRun) -> ExitStatus:
    return QueueLoop(run).loop()
