"""The run loop that queue mode and broadcast mode (``broadcast``) share.

With ``running``, ``connecting``, ``probing`` and ``controlserver``, the only
code that spawns greenlets. A loop is a tick of small named steps (reap what
happened, take entries for the free sub-nodes and start them, wait for the
next event), driven by typed events (``events``) that job greenlets,
reconnecting greenlets, GPU probes, the signal handlers and ``pegasus kill``
(``controlserver``) put on one queue. Its state is
one ``State``. Queue and broadcast mode differ only in which sub-nodes a
taken job goes to and in what a finished step means: ``QueueLoop`` here
(with its GPU probes, ``probing``), ``BroadcastLoop`` in ``broadcast``.
"""

from __future__ import annotations

import itertools
import signal
import time
from contextlib import contextmanager
from enum import Enum
from typing import Dict, List, Optional, Sequence, Tuple

import gevent
import gevent.queue

from pegasus import controlserver, hostswatch, progress
from pegasus.connecting import Hosts, Watch
from pegasus.errors import (ExitStatus, HostsUnreachable, InputError, PegasusError,
                            StorageError, output_failure)
from pegasus.events import (HostBack, HostFailed, HostRefused, HostsChanged, HostSilent,
                            OutputLost, ProbeDone, ProbeDue, Request, Signal, Signalled)
from pegasus.halt import Tally, halt_words
from pegasus.hostlists import HostLists
from pegasus.model import Job, Outcome, Result, SubNode
from pegasus.probing import Heard, Probes
from pegasus.progress import Counts
from pegasus.queuefile import LockWaitAborted
from pegasus.running import Jobs, QueueHead, Retries, Run
from pegasus.scheduler import Plan, Scheduler
from pegasus.words import plural

POLL_SECONDS = 0.25  # how often an idle or blocked queue file is looked at


class State(Enum):
    RUNNING = "taking entries as sub-nodes free up"
    ABORTING = "taking nothing more, running jobs finish (see Loop.abort_status)"
    STOPPING = "Ctrl-c: taking nothing more, waiting for running jobs"
    TERMINATING = "second Ctrl-c or SIGTERM: running jobs are being stopped"


class Mode:
    """What queue mode and broadcast mode each define (the loop calls these)."""

    def plan(self) -> "Plan":
        """Where the next jobs would go (see ``QueuePlan``)."""
        raise NotImplementedError

    def has_targets(self) -> bool:
        """Whether a plan could place any job now (cheaply)."""
        raise NotImplementedError

    def step_done(self) -> None:
        """Called when no job is running any more."""

    def record(self, result: Result) -> None:
        """Keep what the summary needs of a finished job."""
        raise NotImplementedError

    def summary(self, extra: Optional[str]) -> None:
        raise NotImplementedError

    def host_lost(self, node: SubNode, why: str) -> None:
        """``node`` cannot take jobs now: ``why`` is ``connection lost``, ``not
        reachable`` (a job could not be sent) or ``not responding``."""
        raise NotImplementedError

    def probed(self, event) -> None:
        """A GPU probe's answer (``ProbeDone``) or a recheck's time (``ProbeDue``)."""

    def hosts_changed(self, added: Sequence[SubNode], removed: Sequence[SubNode]) -> None:
        """hosts.yaml changed (a daemon, ``hostswatch``): what the mode itself keeps."""

    def may_free_up(self) -> bool:
        """Whether slots that nothing of Pegasus's holds may yet free up (GPU probes)."""
        return False

    def stop(self) -> None:
        """The loop is over: stop what the mode itself started."""

    def counts(self) -> Counts:
        """What the progress line shows."""
        raise NotImplementedError


class Loop(Mode):
    """What both modes share: events, taking, stopping, the exit status."""

    RETRIES = True  # failed jobs with retries left run again (broadcast: steps run once)
    # failed jobs are run again from failed.yaml (broadcast: a step on its failed hosts)
    RERUN_FROM_FAILED_YAML = True

    def __init__(self, run: Run):
        self.run = run
        self.events: gevent.queue.Queue = run.stop.events  # a lock wait ends on one
        self.scheduler = Scheduler(run.nodes)
        self.hosts = Hosts(run.nodes, run.executors, run.connecting, run.failed,
                           run.connector, self.scheduler, run.sink, self.events.put)
        self.state = State.RUNNING
        self.stop_signal = Signal.CTRL_C  # the signal that stopped the run
        self.stopped_by = "Ctrl-c"  # what stopped the run, in words ("pegasus stop")
        self.abort_status = ExitStatus.JOB_FAILED  # why ABORTING: a failed step, lost output
        self.failed = 0  # jobs that did not succeed
        self.queued = run.queued  # jobs left in the queue file, as far as takes tell
        self.tally, self.halted = Tally(run.halt), None  # --halt; why it stopped the run
        self.head = QueueHead(run.queue, run.sink, run.daemon)
        self.jobs = Jobs(self.hosts, run.records, run.sink, self.events.put, run.timeout,
                         run.logs, run.retries if self.RETRIES else None)
        self.retries = Retries(run.records, run.sink, run.retries)
        self.hostlists = HostLists(run.skipped)  # failed-hosts.txt, unreachable-hosts.txt

    def loop(self) -> ExitStatus:
        with _side_tasks(self):
            while True:
                self.reap(block=False)
                if self.may_take():
                    self.take()
                if _over(self):
                    break
                self.reap(block=True)
            self.give_back()
        return self.report()

    def host_lost(self, node: SubNode, why: str) -> None:
        self.hostlists.lost(node.hostname)
        self.hosts.lose_host(node)

    # -- steps

    def signalled(self, which: Signal, by: str = "Ctrl-c", now: bool = False) -> None:
        self.run.stop.requested = True  # seen at once, even while waiting for the lock
        self.events.put(Signalled(which, by, now))

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
            return self.on_signal(event.signal, event.by, event.now)
        if isinstance(event, (HostBack, HostFailed, HostRefused)):
            self.hosts.back(event)
            self.head.wake()
            if self.hosts.hopeless():
                self.abort(str(HostsUnreachable(self.hosts.failed_errors())),
                           ExitStatus.UNREACHABLE)
            return None
        if isinstance(event, OutputLost):
            return self.output_lost(event.error)
        if isinstance(event, HostSilent):
            return self.hosts.silent(event.hostname, event.seconds, self.jobs.abandon,
                                     self.host_lost)
        if isinstance(event, (ProbeDone, ProbeDue)):
            return self.probed(event)
        if isinstance(event, Request):
            return event.act(self)
        if isinstance(event, HostsChanged):
            return hostswatch.apply(self, event)
        self.job_done(event.result)

    def job_done(self, result: Result) -> None:
        self.hostlists.add(result)
        self.scheduler.finish(result.node)
        self.head.wake()
        self.jobs.ended(result.node)
        try:
            result = self.retries.settle(result)  # the records, and what runs again
        except PegasusError as err:
            self.storage_failed(err)
        if not (result.retrying or result.put_back):  # else it runs again: no outcome yet
            self.failed += not result.ok
            self.record(result)
            self.halt_if(self.tally.add(result.ok))
        self.queued += result.put_back
        if result.outcome in (Outcome.NOT_STARTED, Outcome.LOST):
            self.host_lost(result.node, "connection lost" if result.outcome is Outcome.LOST
                           else "not reachable")
        if not self.scheduler.running:
            self.step_done()

    def may_take(self) -> bool:
        if self.state is not State.RUNNING or self.run.stop.requested:
            return False
        return self.has_targets() and (bool(self.retries) or self.head.may_have_jobs())

    def take(self) -> None:
        plan = self.plan()
        if self.retries:  # taken before: ahead of the queue's entries
            for node, job in self.retries.place(plan.place_retry):
                self.start(node, job)
            if not plan.want or not self.head.may_have_jobs():
                return None
        seen = self.head.queue.signature()  # before: a file replaced after the take is new
        try:
            taken = self.run.records.take_placed(plan.want, plan.place, self.run.check)
        except InputError as err:
            return self.head.block(err, seen)
        except StorageError as err:  # a full disk
            return self.storage_failed(err)
        except PegasusError as err:  # a folder made unwritable, a link planted
            return self.abort(str(err), err.exit_status)
        except LockWaitAborted:
            return None
        for node, job in plan.assign(taken.jobs):
            self.start(node, job)
        self.queued = 0 if taken.emptied else max(self.queued - len(taken.jobs), 0)
        if taken.fault is not None:
            self.storage_failed(taken.fault)
        self.head.took(len(taken.jobs), taken.emptied, taken.error, taken.signature,
                       taken.waiting, taken.pending)

    def start(self, node: SubNode, job: Job) -> None:
        self.scheduler.start([node])
        self.jobs.start(node, job)

    def wait_seconds(self) -> Optional[float]:
        if self.state is not State.RUNNING or not self.has_targets():
            return None  # only a finishing job can change anything
        return POLL_SECONDS

    # -- stopping

    def on_signal(self, which: Signal, by: str = "Ctrl-c", now: bool = False) -> None:
        """SIGTERM, or a second Ctrl-c: stop the running jobs; a first Ctrl-c: take
        nothing more; ``now`` (``pegasus stop --now``): both at once, said once."""
        if which is Signal.SIGTERM:
            self.stop_signal = Signal.SIGTERM
            return self.terminate()
        if self.state in (State.STOPPING, State.TERMINATING):
            return self.terminate()
        self.state, self.stopped_by = State.STOPPING, by
        if now:
            return self.terminate()
        self.run.sink.message(_ctrl_c_words(self.scheduler.running, by))

    def terminate(self) -> None:
        """Stop every running job: TERM to its process group, KILL later."""
        if self.state is State.TERMINATING:
            return
        self.state = State.TERMINATING
        self.jobs.stop_all(list(self.scheduler.busy))

    def halt_if(self, why: Optional[str]) -> None:
        """``--halt`` fired: take nothing more; with ``now``, stop the running jobs."""
        if why is None or self.state is not State.RUNNING:
            return
        self.halted, now = why, self.run.halt.now
        self.abort(halt_words(why, now, self.scheduler.running))
        if now:
            self.jobs.stop_all(list(self.scheduler.busy))

    def abort(self, why: str, status: ExitStatus = ExitStatus.JOB_FAILED) -> None:
        """Take nothing more; running jobs finish (``--error-aborts``, lost output)."""
        if self.state is State.RUNNING:
            self.state, self.abort_status = State.ABORTING, status
            self.run.sink.message(why)

    def give_back(self) -> None:
        """Jobs waiting for a next attempt (not a success) or to be put back: queued."""
        try:
            self.run.records.unsent.end()
            self.failed += self.retries.give_back()
        except PegasusError as err:
            self.storage_failed(err)

    def storage_failed(self, err: PegasusError) -> None:
        self.abort(f"{err}\n(no new jobs will start; running jobs finish: their records "
                   "are kept where they can still be written)", ExitStatus.IO_ERROR)

    def output_lost(self, err: OSError) -> None:
        self.abort(_output_lost_words(err, self.scheduler.running), ExitStatus.IO_ERROR)

    def report(self) -> ExitStatus:
        signalled = self.state in (State.STOPPING, State.TERMINATING)
        why = {Signal.CTRL_C: f"interrupted by {self.stopped_by}",
               Signal.SIGTERM: "terminated by SIGTERM"}[self.stop_signal]
        status = _host_lists(self, _exit_status(self))  # said before the summary, the last word
        self.summary(why if signalled else self.halted and f"halted: {self.halted}")
        return status


def _ctrl_c_words(running: int, by: str) -> str:
    again = "Ctrl-c again" if by == "Ctrl-c" else "pegasus stop --now"
    return (f"{by}: no new jobs will start and the queue file is left as it is; " +
            (f"waiting for {plural(running, 'running job')} to finish ({again} "
             "stops them)" if running else "no job is running"))


def _output_lost_words(err: OSError, running: int) -> str:
    return (f"{output_failure(err)}: no new jobs will start and the queue file is left "
            "as it is" + (f"; waiting for {plural(running, 'running job')} to finish"
                          if running else ""))


def _over(loop: Loop) -> bool:
    """Whether the run is over: nothing runs and nothing more will be taken (said
    when that is not plain: no sub-node left, a head that can never be placed)."""
    if loop.scheduler.running:
        return False
    if loop.state is not State.RUNNING:
        return True
    if loop.head.done() and not loop.retries:
        return True
    if loop.hosts.reconnecting:
        return False
    if not loop.scheduler.has_free():
        loop.run.sink.message("no usable sub-node is left; stopping")
        return True
    if loop.head.waiting and not loop.run.daemon and not loop.may_free_up():
        loop.run.sink.message("the job at the head of the queue needs more slots than "
                              "any host that is up has free; it stays in the queue")
        return True
    return False


def _exit_status(loop: Loop) -> ExitStatus:
    """A signal; else bad input at the head; else why it aborted; else the jobs."""
    if loop.state in (State.STOPPING, State.TERMINATING):
        return loop.stop_signal.value
    if loop.head.blocked is not None:
        return ExitStatus.BAD_INPUT
    if loop.state is State.ABORTING:
        return loop.abort_status
    if loop.failed or loop.run.skipped:  # a skipped host did not run the jobs either
        return ExitStatus.JOB_FAILED
    return ExitStatus.UNREACHABLE if loop.hosts.refused else ExitStatus.OK


def _host_lists(loop: Loop, status: ExitStatus) -> ExitStatus:
    """failed-hosts.txt and unreachable-hosts.txt, and how to run again on them."""
    refused = {err.host for err in loop.hosts.refused}
    nodes = loop.hosts.nodes  # as hosts.yaml last said: a host removed from it is not lost
    for node in nodes:  # never reached, or refused for good
        if node not in loop.hosts.executors or node.hostname in refused:
            loop.hostlists.lost(node.hostname)
    try:
        words = loop.hostlists.write(loop.run.queue.path, loop.run.rerun,
                                     [node.hostname for node in nodes],
                                     loop.run.queue.failed_path if loop.RERUN_FROM_FAILED_YAML
                                     else "")
    except StorageError as err:
        loop.run.sink.message(str(err))
        return ExitStatus.IO_ERROR if status in (ExitStatus.OK, ExitStatus.JOB_FAILED) else status
    for line in words:
        loop.run.sink.message(line)
    return status


@contextmanager
def _side_tasks(loop: Loop):
    """While the loop runs: signal handlers, heartbeats, stdout's writer, reconnects,
    the control socket (``pegasus status``, ``stop``, ``kill``)."""
    handlers = [gevent.signal_handler(signal.SIGINT, loop.signalled, Signal.CTRL_C),
                gevent.signal_handler(signal.SIGTERM, loop.signalled, Signal.SIGTERM)]
    beating = gevent.spawn(Watch(loop.hosts).run, lambda: list(loop.scheduler.busy))
    sink = loop.run.sink
    outlet = sink.outlet
    draining = gevent.spawn(outlet.drain, lambda err: loop.events.put(OutputLost(err)))
    drawing = gevent.spawn(_draw_progress, loop) if sink.shows_progress else None
    control = None
    source = loop.run.hosts_source  # a daemon's hosts.yaml, watched
    watching = source and gevent.spawn(hostswatch.Watch(source, loop.run.nodes,
                                                        loop.events.put).run)
    try:
        if outlet.error is not None:
            loop.output_lost(outlet.error)
        loop.hosts.start()
        control = controlserver.serve(loop)
        yield
    finally:
        if control is not None:
            control.close()
        for handler in handlers:
            handler.cancel()
        loop.hosts.stop()
        loop.stop()
        beating.kill()
        if watching:
            watching.kill()
        loop.hosts.close()
        if drawing is not None:
            drawing.kill()
            sink.progress("")  # the summary follows, on the line it held
        outlet.flush()
        draining.kill()


def _draw_progress(loop: Loop) -> None:
    """The progress line, drawn again every ``progress.EVERY`` seconds (a terminal)."""
    started = time.monotonic()
    while True:
        loop.run.sink.progress(progress.line(loop.counts(), time.monotonic() - started))
        gevent.sleep(progress.EVERY)


# ---------------------------------------------------------------- queue mode

class QueueLoop(Loop):
    """Each job once, on the next free sub-node."""

    def __init__(self, run: Run):
        super().__init__(run)
        self.failures: List[Tuple[int, Result]] = []  # (take number, result); the
        self.succeeded = 0                              # others are counted, not kept
        self.takes = itertools.count()
        self.taken: Dict[SubNode, int] = {}  # each running job's take number
        self.probes = Probes(run.nodes, self.hosts, self.scheduler, run.sink, self.events.put)
        self.last_plan: Optional[Plan] = None  # the last take's: the hosts a job waited for

    def start(self, node: SubNode, job: Job) -> None:
        self.taken[node] = next(self.takes)
        super().start(node, job)

    def record(self, result: Result) -> None:
        number = self.taken.pop(result.node, 0)
        if result.ok:
            self.succeeded += 1
        else:
            self.failures.append((number, result))

    def summary(self, extra: Optional[str]) -> None:
        """Failed jobs in queue order (the order they were taken)."""
        failed = [result for _, result in sorted(self.failures, key=lambda f: f[0])]
        self.run.sink.summary(failed, extra, len(failed) + self.succeeded)

    def counts(self) -> Counts:
        return Counts(self.succeeded + len(self.failures), self.scheduler.running,
                      self.queued, len(self.failures))

    def plan(self) -> "QueuePlan":
        self.probes.refresh()
        self.last_plan = self.scheduler.plan(self.probes.view())
        return QueuePlan(self.last_plan)

    def has_targets(self) -> bool:
        return self.scheduler.has_free()

    def probed(self, event) -> None:
        if isinstance(event, ProbeDue):
            return self.probes.due(event, self.head.waiting)
        colour = event.node.colour
        awaited = self.last_plan is not None and colour in self.last_plan.waits_for
        heard = self.probes.done(event, self.scheduler.held.get(colour, set()), awaited)
        if heard is Heard.LOST:
            self.host_lost(event.node, "connection lost")
        elif heard is Heard.WAKE:
            self.head.wake()
        return None

    def may_free_up(self) -> bool:
        return self.probes.may_free()

    def hosts_changed(self, added: Sequence[SubNode], removed: Sequence[SubNode]) -> None:
        self.probes.change(added, removed)

    def stop(self) -> None:
        self.probes.stop()


class QueuePlan:
    """Each job on the sub-node (and slots) the scheduler's plan gives it."""

    def __init__(self, plan):
        self.plan, self.want = plan, plan.want
        self.nodes: List[SubNode] = []  # where each placed job goes, in order

    def place(self, job: Job) -> Optional[str]:
        node = self.plan.place(job)
        if node is None:
            return None
        self.nodes.append(node)
        return node.label

    def place_retry(self, job: Job, avoid) -> Optional[SubNode]:
        """A job taken before, waiting to run again (``avoid``: where it failed)."""
        node = self.plan.place(job, avoid)
        self.want -= node is not None
        return node

    def assign(self, jobs) -> List[Tuple[SubNode, Job]]:
        return list(zip(self.nodes, jobs))


def queue_mode(run: Run) -> ExitStatus:
    return QueueLoop(run).loop()
