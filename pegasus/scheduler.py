"""Which free sub-nodes get the next jobs. Pure: no I/O, no gevent."""

from __future__ import annotations

from collections import Counter
from typing import Iterable, List, Sequence, Set

from pegasus.model import SubNode


class Scheduler:
    """Tracks which sub-nodes are busy or unusable and orders the free ones."""

    def __init__(self, nodes: Sequence[SubNode]):
        self.nodes = list(nodes)
        self.busy: Set[SubNode] = set()
        self.down: Set[SubNode] = set()

    def free(self) -> List[SubNode]:
        """Free sub-nodes, least loaded host first, then in hosts.yaml order.

        Spreading jobs over hosts first keeps one host from taking every job
        while another idles (two hosts with two GPUs each get one job each
        before any host gets a second).
        """
        load = Counter(node.hostname for node in self.busy)
        idle = [n for n in self.nodes if n not in self.busy and n not in self.down]
        return _spread(idle, load)

    def start(self, nodes: Iterable[SubNode]) -> None:
        for node in nodes:
            if node in self.busy or node in self.down:
                raise ValueError(f"{node.label} is not free")
            self.busy.add(node)

    def finish(self, node: SubNode) -> None:
        self.busy.discard(node)

    def take_down(self, node: SubNode) -> None:
        """The sub-node's host is unusable: give it no more jobs."""
        self.down.add(node)

    def bring_up(self, node: SubNode) -> None:
        """The sub-node can take jobs again."""
        self.down.discard(node)

    def is_busy(self, node: SubNode) -> bool:
        return node in self.busy

    def is_down(self, node: SubNode) -> bool:
        return node in self.down

    @property
    def running(self) -> int:
        return len(self.busy)


def _spread(idle: List[SubNode], load: Counter) -> List[SubNode]:
    """Round-robin over hosts, starting with the least loaded ones."""
    order: List[SubNode] = []
    load = Counter(load)
    pending = list(idle)
    while pending:
        best = min(pending, key=lambda n: (load[n.hostname], n.index))
        order.append(best)
        load[best.hostname] += 1
        pending.remove(best)
    return order
