"""``--fold``: each distinct output of a broadcast step printed once, under the
set of sub-nodes that printed it (ClusterShell's ``clush -b``).

``Gathered`` keeps each sub-node's lines of the current step (at most
``LIMIT`` bytes each: beyond, cut with a note; the job log has them all);
``groups`` folds them, pure; ``FoldedSteps`` is the sink of ``b --fold``:
it gathers instead of printing lines and frames, and prints the groups when
the step ends; ``FoldedSummary``, of ``q --fold``, groups the summary's
failed jobs by their error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from pegasus import nodeset
from pegasus.output import Sink, id_tag
from pegasus.steps import SHORT as _SHORT, not_run, step_command
from pegasus.words import one_line, plural

LIMIT = 1 << 20  # bytes of one sub-node's output gathered in a step (1 MiB)
NO_RESULT = "no result (stopped before it ended)"


@dataclass
class _Output:
    lines: Dict[str, List[bytes]] = field(default_factory=lambda: {"stdout": [], "stderr": []})
    size: int = 0
    cut: bool = False

    def add(self, stream: str, lines: Sequence[bytes]) -> None:
        for line in lines:
            if self.cut or self.size + len(line) + 1 > LIMIT:
                self.cut = True
                return
            self.size += len(line) + 1
            self.lines[stream].append(line)

    def key(self) -> Tuple:
        return tuple(self.lines["stdout"]), tuple(self.lines["stderr"]), self.cut


class Gathered:
    """Each sub-node's output in the current step, bounded."""

    def __init__(self):
        self.outputs: Dict[object, _Output] = {}

    def started(self, node) -> None:
        self.outputs[node] = _Output()

    def add(self, node, stream: str, lines: Sequence[bytes]) -> None:
        self.outputs.setdefault(node, _Output()).add(stream, lines)

    def take(self) -> Dict[object, _Output]:
        outputs, self.outputs = self.outputs, {}
        return outputs


@dataclass(frozen=True)
class Group:
    """Sub-nodes that printed the same; ``statuses``: (words, sub-nodes) each."""

    nodes: Tuple
    output: _Output
    statuses: Tuple[Tuple[str, Tuple], ...]

    def header(self) -> str:
        names = _names(self.nodes)
        if len(self.statuses) == 1:
            return f"{names} ({len(self.nodes)}): {self.statuses[0][0]}"
        each = "; ".join(f"{words} on {_names(nodes)}" for words, nodes in self.statuses)
        return f"{names} ({len(self.nodes)}): {each}"


def groups(outputs: Dict[object, _Output], statuses: Dict[object, str]) -> List[Group]:
    """Sub-nodes with identical output together: largest group first, then by
    the first sub-node's place in hosts.yaml (never by completion order)."""
    together: Dict[Tuple, List] = {}
    for node in sorted(set(outputs) | set(statuses), key=lambda n: n.index):
        together.setdefault(outputs.get(node, _Output()).key(), []).append(node)
    found = [_group(nodes, outputs.get(nodes[0], _Output()), statuses)
             for nodes in together.values()]
    return sorted(found, key=lambda g: (-len(g.nodes), g.nodes[0].index))


def _group(nodes: List, output: _Output, statuses: Dict[object, str]) -> Group:
    by_words: Dict[str, List] = {}
    for node in nodes:
        by_words.setdefault(statuses.get(node, NO_RESULT), []).append(node)
    return Group(tuple(nodes), output,
                 tuple((words, tuple(members)) for words, members in by_words.items()))


def _names(nodes: Sequence) -> str:
    """A label with parameters stays whole, in its brackets: its commas are its own."""
    return nodeset.fold(node.label if node.params else node.label[1:-1] for node in nodes)


class FoldedSteps(Sink):
    """The sink of ``b --fold``: a step's lines gathered, then printed folded."""

    # Of a run of \r updates only the first and the final state: what a node
    # prints must not depend on how fast it drew (2 s apart would).
    progress_every = math.inf

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gathered = Gathered()

    def lines(self, node, stream_name: str, lines: Sequence[bytes]) -> None:
        self.gathered.add(node, stream_name, lines)

    def block(self, node, stream_name: str, block: bytes) -> None:
        self.lines(node, stream_name, block[:-1].split(b"\n"))

    def job_started(self, node, command: str, job_id: Optional[int] = None,
                    attempt: int = 1) -> None:
        self.gathered.started(node)

    def job_done(self, node, result) -> None:
        pass  # its status is in its group's header

    def step_output(self, results: Sequence, stopped: bool = False) -> None:
        outputs = self.gathered.take()
        if not outputs and not results:
            return
        if stopped:
            self.message("the step was stopped: its output is incomplete")
        statuses = {r.node: r.describe() for r in results}
        for group in groups(outputs, statuses):
            self._print_group(group)

    def _print_group(self, group: Group) -> None:
        self.outlet.write(f"=== {group.header()} ===\n".encode(), wait=True)
        out = group.output.lines["stdout"] + group.output.lines["stderr"]
        shown = out if self.print_period == 1 else out[::self.print_period] \
            if self.print_period else []
        if shown:
            self.outlet.write(b"".join(line + b"\n" for line in shown), wait=True)
        if group.output.cut:
            self.message(f"output cut at {LIMIT >> 20} MiB a sub-node; the whole output "
                         "is in the job logs (pegasus log ID)")

    def step_report(self, number: int, results: Sequence, missed=()) -> None:
        """As ``Sink.step_report``, the failed sub-nodes folded by status."""
        failed = [r for r in results if not r.ok]
        if not failed:
            return super().step_report(number, results, missed)
        head = (f"step {number} '{step_command(results)}': {len(failed)} of {len(results)} "
                f"sub-nodes failed{not_run(missed)}:")
        by_words: Dict[str, List] = {}
        for result in sorted(failed, key=lambda r: r.node.index):
            by_words.setdefault(result.describe(), []).append(result.node)
        self._write(self._tagged([head] + [f"  {_names(nodes)} ({len(nodes)}): {words}"
                                           for words, nodes in by_words.items()]))


class FoldedSummary(Sink):
    """The sink of ``q --fold``: job output as without it; the summary folded."""

    def summary(self, results: Sequence, extra: Optional[str] = None,
                total: Optional[int] = None) -> None:
        """Queue mode: the failed jobs grouped by identical error."""
        failed = [r for r in results if not r.ok]
        if not failed:
            return super().summary(results, extra, total)
        total = len(results) if total is None else total
        by_error: Dict[str, List] = {}
        for result in failed:
            by_error.setdefault(result.describe(), []).append(result)
        rows = [f"{plural(total, 'job')}, {len(failed)} failed:"]
        for words, same in sorted(by_error.items(), key=lambda item: -len(item[1])):
            rows.append(f"  {words} ({plural(len(same), 'job')}) on "
                        f"{_names(sorted({r.node for r in same}, key=lambda n: n.index))}: "
                        + _commands(same))
        self._write(self._tagged(rows + ([extra] if extra else [])))


def _commands(results: Sequence, named: int = 3) -> str:
    texts = [f"{id_tag(r)}'{one_line(r.rendered, _SHORT)}'" for r in results[:named]]
    more = f" and {len(results) - named} more" if len(results) > named else ""
    return ", ".join(texts) + more
