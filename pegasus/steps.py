"""Broadcast mode's summary: a row a step (or a run of alike steps), in flat memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from pegasus.words import one_line

SHORT = 80  # commands in the summary are shortened to this many characters


def step_command(results: Sequence) -> str:
    """The step's command: rendered if every sub-node ran the same text."""
    if not results:
        return ""
    rendered = {r.rendered for r in results}
    text = rendered.pop() if len(rendered) == 1 else results[0].job.command
    return one_line(text, SHORT)


Missed = Tuple[Tuple[str, str], ...]  # (label, why) of the sub-nodes that did not run a step
_NAMED = 5  # sub-nodes named in a "not run on" list; the others are counted


@dataclass
class _StepRow:
    """One step of the summary, or consecutive steps that went alike (same
    sub-nodes left out, none failed): they share a row, so memory stays flat."""

    first: int
    last: int
    commands: Tuple[str, str]  # of the first and the last step
    ok: int
    failed: str  # "1 failed: [node-3] exit 128", or ""
    missed: Missed

    def text(self) -> str:
        if self.first == self.last:
            row = f"  step {self.first} '{self.commands[0]}': {self.ok} ok"
        else:
            row = (f"  steps {self.first}-{self.last} ('{self.commands[0]}' ... "
                   f"'{self.commands[1]}'): {self.ok} ok each")
        if self.failed:
            row += f", {self.failed}"
        return row + not_run(self.missed)

    def absorbs(self, other: "_StepRow") -> bool:
        """Whether ``other``, the next step, is told by this row (and now is)."""
        if self.failed or other.failed or not other.missed or other.first != self.last + 1 \
                or (other.ok, other.missed) != (self.ok, self.missed):
            return False
        self.last, self.commands = other.last, (self.commands[0], other.commands[1])
        return True


def _step_row(number: int, results: Sequence, missed: Missed) -> _StepRow:
    failed = [r for r in results if not r.ok]
    words = f"{len(failed)} failed: " + "; ".join(
        f"{r.node.label} {r.describe()}" for r in failed) if failed else ""
    command = step_command(results)
    return _StepRow(number, number, (command, command), len(results) - len(failed), words,
                    missed)


def not_run(missed: Missed) -> str:
    """``; not run on [a], [b] (why); [c] (why)``: the first few named, grouped by why."""
    if not missed:
        return ""
    named: Dict[str, List[str]] = {}
    for label, why in missed[:_NAMED]:
        named.setdefault(why, []).append(label)
    groups = [f"{', '.join(labels)} ({why})" for why, labels in named.items()]
    if len(missed) <= _NAMED:
        return "; not run on " + "; ".join(groups)
    more = f" and {len(missed) - _NAMED} more"
    if len(named) == 1 and all(why == missed[0][1] for _, why in missed):
        return (f"; not run on {len(missed)} sub-nodes: {', '.join(named[missed[0][1]])}"
                f"{more} ({missed[0][1]})")
    return f"; not run on {len(missed)} sub-nodes: " + "; ".join(groups) + more


class StepTable:
    """The broadcast summary's rows, in memory that stays flat over many steps.

    Every failed step keeps its row; so do steps some sub-node did not run
    (left out earlier: lost, not responding), consecutive alike ones sharing
    a row; steps that succeeded everywhere keep theirs while there are at
    most ``ok_rows`` of them, and are only counted after that.
    """

    def __init__(self, ok_rows: int = 100):
        self.ok_rows = ok_rows
        self.steps = self.failed = self.missed = 0  # steps; with failures; not run everywhere
        self.marked = 0  # steps with failures or not run everywhere: their rows are kept
        self.rows: List[Tuple[_StepRow, bool]] = []  # (row, whether it is kept for good)
        self.ok_uncounted = 0  # succeeded steps whose rows were dropped
        self.out: Dict[object, str] = {}  # sub-nodes left out for the rest of the run: why

    def leave_out(self, node, why: str, in_step: bool) -> None:
        """``node`` takes no further steps: ``why`` (``connection lost``), and since when."""
        if node not in self.out:
            when = (f"in step {self.steps + 1}" if in_step else
                    f"after step {self.steps}" if self.steps else "before step 1")
            self.out[node] = f"{why} {when}"

    def add(self, results: Sequence, nodes: Sequence = ()) -> Missed:
        """One step's results; ``nodes``: every sub-node of the run. Returns those
        of them that did not run it, and why."""
        ran = {r.node for r in results}
        missed = tuple((n.label, self.out.get(n, "not connected")) for n in nodes
                       if n not in ran)
        self.steps += 1
        failed = any(not r.ok for r in results)
        self.failed += failed
        self.missed += bool(missed)
        marked = failed or bool(missed)
        self.marked += marked
        row = _step_row(self.steps, results, missed)
        if not (self.rows and self.rows[-1][0].absorbs(row)):
            self.rows.append((row, marked))
        if not marked and self.steps - self.marked > self.ok_rows:
            self.ok_uncounted = self.steps - self.marked
            self.rows = [(r, kept) for r, kept in self.rows if kept]
        return missed

