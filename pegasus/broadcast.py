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
from pegasus.model import Job, Result, SubNode
from pegasus.modes import Loop, Run
from pegasus.output import StepTable


class BroadcastLoop(Loop):
    """Each job on every sub-node; the next only when all have finished."""

    def __init__(self, run: Run):
        super().__init__(run)
        self.table = StepTable()  # the summary's rows
        self.step: List[Result] = []  # the current step's results

    def plan(self) -> "Step":
        return Step([] if self.scheduler.running else self.scheduler.free())

    def has_targets(self) -> bool:
        return not self.scheduler.running and self.scheduler.has_free()

    def record(self, result: Result) -> None:
        self.step.append(result)

    def step_done(self) -> None:
        results, number = self.step, self.table.steps + 1
        self.step = []
        if results:
            self.run.records.step_done(results[0].job)
        self.table.add(results)
        self.run.sink.step_report(number, results)
        if any(not r.ok for r in results) and self.run.error_aborts:
            self.abort(f"--error-aborts: step {number} failed, so no more entries are taken")

    def summary(self, extra: Optional[str]) -> None:
        self.run.sink.broadcast_summary(self.table, extra)

    def host_lost(self, node: SubNode) -> None:
        self.hosts.lose_sub_node(node)


class Step:
    """One job, on every free sub-node."""

    def __init__(self, targets: List[SubNode]):
        self.targets, self.want = targets, 1 if targets else 0

    def place(self, job) -> str:
        count = len(self.targets)
        return f"broadcast to {count} sub-node" + ("s" if count != 1 else "")

    def assign(self, jobs) -> List[Tuple[SubNode, Job]]:
        return [(node, job) for job in jobs for node in self.targets]  # at most one job


def broadcast_mode(run: Run) -> ExitStatus:
    return BroadcastLoop(run).loop()
