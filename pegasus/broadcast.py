"""Broadcast mode: each job on every sub-node, the next only when all are done.

The loop itself is ``modes.Loop``; this is what broadcast mode does
differently: which sub-nodes a taken job goes to (all of them, and only
when none is busy), what a finished step means (a per-step report; with
``--error-aborts`` a failed step stops the run), and that a lost sub-node
stays out for the rest of the run (lock-step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from pegasus.errors import ExitStatus
from pegasus.model import Job, Result, SubNode
from pegasus.modes import Loop, Run


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

    def put_back(self, result: Result) -> None:
        """The other sub-nodes ran it: it fails this step here instead."""
        if self.run.journal is not None:
            self.run.journal.lost(result.job.ticket, result.node.label, result.error)

    def host_lost(self, node: SubNode) -> None:
        """In lock-step a lost sub-node stays out for the rest of the run."""
        self.scheduler.take_down(node)
        self.run.sink.message(f"{node.label}: connection lost; it takes no further steps")


def broadcast_mode(run: Run) -> ExitStatus:
    return BroadcastLoop(run).loop()
