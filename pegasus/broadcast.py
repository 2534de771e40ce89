"""Broadcast mode: each job on every sub-node, the next only when all are done.

The loop itself is ``modes.Loop``; this is what broadcast mode does
differently: which sub-nodes a taken job goes to (all of them, and only
when none is busy), what a finished step means (a per-step report; with
``--error-aborts`` a failed step stops the run), and that a lost sub-node
stays out for the rest of the run (lock-step).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from pegasus.errors import ExitStatus
from pegasus.model import Job, Outcome, Result, SubNode
from pegasus.modes import Loop, Run, State
from pegasus.steps import StepTable
from pegasus.progress import Counts
from pegasus.selection import fold
from pegasus.words import plural


class BroadcastLoop(Loop):
    """Each job on every sub-node; the next only when all have finished."""

    RETRIES = False  # a step runs once on each sub-node: 'retries' does not apply
    RERUN_FROM_FAILED_YAML = False  # a failed step runs again on the failed hosts

    def __init__(self, run: Run):
        super().__init__(run)
        self.table = StepTable()  # the summary's rows
        self.step: List[Result] = []  # the current step's results
        self.in_step = False  # a step was started and has not ended yet
        self.members = list(run.nodes)  # the sub-nodes when the step started (hosts.yaml)

    def plan(self) -> "Step":
        self.members = list(self.hosts.nodes)  # a change to hosts.yaml applies between steps
        return Step([] if self.scheduler.running else self.scheduler.free())

    def has_targets(self) -> bool:
        return not self.scheduler.running and self.scheduler.has_free()

    def start(self, node: SubNode, job: Job) -> None:
        self.in_step = True
        super().start(node, job)

    def record(self, result: Result) -> None:
        self.step.append(result)

    def step_done(self) -> None:
        results, number = self.step, self.table.steps + 1
        self.step = []
        if results:
            self.run.records.step_done(results[0].job, [
                r for r in results if r.outcome in (Outcome.FAILED, Outcome.TIMED_OUT)])
        missed = self.table.add(results, self.members)
        self.in_step = False
        self.failed += len(missed)  # a job a sub-node did not run has not succeeded
        self.run.sink.step_output(results, stopped=self.state is State.TERMINATING)
        self.run.sink.step_report(number, results, missed)
        if any(not r.ok for r in results) and self.run.error_aborts:
            self.abort(f"--error-aborts: step {number} failed, so no more entries are taken")

    def summary(self, extra: Optional[str]) -> None:
        skipped = self.run.skipped and (
            f"{plural(len(self.run.skipped), 'host')} skipped, unreachable at start "
            f"(--skip-unreachable): {fold(self.run.skipped)}")
        self.run.sink.broadcast_summary(self.table, "\n".join(filter(None, (skipped, extra))))

    def counts(self) -> Counts:
        return Counts(self.table.steps, self.scheduler.running, self.queued,
                      self.table.failed, steps=True)

    def host_lost(self, node: SubNode, why: str) -> None:
        self.hostlists.lost(node.hostname)
        self.table.leave_out(node, why, self.in_step)
        self.hosts.lose_sub_node(node, why)
        if self.run.error_aborts:  # the next step would run without it, out of lock-step
            self.abort(f"--error-aborts: {node.label} {self.table.out[node]}, so no more "
                       "entries are taken")


class Step:
    """One job, on every free sub-node."""

    def __init__(self, targets: List[SubNode]):
        self.targets, self.want = targets, 1 if targets else 0

    def place(self, job) -> str:
        return f"broadcast to {plural(len(self.targets), 'sub-node')}"

    def assign(self, jobs) -> List[Tuple[SubNode, Job]]:
        return [(node, job) for job in jobs for node in self.targets]  # at most one job


def broadcast_mode(run: Run) -> ExitStatus:
    return BroadcastLoop(run).loop()
