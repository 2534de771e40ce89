"""Which free sub-nodes get the next jobs. Pure: no I/O, no gevent.

Each host keeps a heap of its idle sub-nodes (by hosts.yaml order), so
starting, finishing and taking a sub-node down cost O(log n), and ordering
the k idle sub-nodes costs O(k log h) for h hosts: a hosts file of 10,000
sub-nodes schedules as fast as one of 10.
"""

from __future__ import annotations

import heapq
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from pegasus.model import SubNode


class Scheduler:
    """Tracks which sub-nodes are busy or unusable and orders the free ones."""

    def __init__(self, nodes: Sequence[SubNode]):
        self.nodes = list(nodes)
        self.busy: Set[SubNode] = set()
        self.down: Set[SubNode] = set()
        self.load: Dict[str, int] = {}  # running jobs per host
        self.idle: Dict[str, List[Tuple[int, SubNode]]] = {}  # per host: heap by index
        for node in self.nodes:
            self.load.setdefault(node.hostname, 0)
            self.idle.setdefault(node.hostname, []).append((node.index, node))
        for heap in self.idle.values():
            heapq.heapify(heap)
        self.idle_count = len(self.nodes)
        self._free: Optional[List[SubNode]] = None  # free(), until something changes

    def free(self) -> List[SubNode]:
        """Free sub-nodes, least loaded host first, then in hosts.yaml order.

        Spreading jobs over hosts first keeps one host from taking every job
        while another idles (two hosts with two GPUs each get one job each
        before any host gets a second).
        """
        if self._free is None:
            self._free = _spread(self.idle, self.load) if self.idle_count else []
        return list(self._free)

    def has_free(self) -> bool:
        return self.idle_count > 0

    def start(self, nodes: Iterable[SubNode]) -> None:
        for node in nodes:
            if node in self.busy or node in self.down:
                raise ValueError(f"{node.label} is not free")
            self._leave_idle(node)
            self.busy.add(node)
            self.load[node.hostname] += 1

    def finish(self, node: SubNode) -> None:
        if node in self.busy:
            self.busy.discard(node)
            self.load[node.hostname] -= 1
            if node not in self.down:
                self._enter_idle(node)

    def take_down(self, node: SubNode) -> None:
        """The sub-node's host is unusable: give it no more jobs."""
        if node not in self.down:
            self.down.add(node)
            if node not in self.busy:
                self._leave_idle(node)

    def bring_up(self, node: SubNode) -> None:
        """The sub-node can take jobs again."""
        if node in self.down:
            self.down.discard(node)
            if node not in self.busy:
                self._enter_idle(node)

    def is_busy(self, node: SubNode) -> bool:
        return node in self.busy

    def is_down(self, node: SubNode) -> bool:
        return node in self.down

    @property
    def running(self) -> int:
        return len(self.busy)

    def _enter_idle(self, node: SubNode) -> None:
        heapq.heappush(self.idle[node.hostname], (node.index, node))
        self.idle_count += 1
        self._free = None

    def _leave_idle(self, node: SubNode) -> None:
        heap = self.idle[node.hostname]
        entry = (node.index, node)
        if heap and heap[0] == entry:
            heapq.heappop(heap)
        else:  # O(k) for a host's k idle sub-nodes, only when one is not its first
            heap.remove(entry)
            heapq.heapify(heap)
        self.idle_count -= 1
        self._free = None


def _spread(idle: Dict[str, List[Tuple[int, SubNode]]], load: Dict[str, int]) -> List[SubNode]:
    """Round-robin over hosts, starting with the least loaded ones.

    The next sub-node is always the one with the smallest (its host's load,
    its index): a heap of hosts keyed by that, each host's idle sub-nodes in
    index order.
    """
    queues = {host: sorted(heap) for host, heap in idle.items() if heap}
    hosts = [(load[host], entries[0][0], host, 0) for host, entries in queues.items()]
    heapq.heapify(hosts)
    order: List[SubNode] = []
    while hosts:
        used, _, host, at = heapq.heappop(hosts)
        entries = queues[host]
        order.append(entries[at][1])
        if at + 1 < len(entries):
            heapq.heappush(hosts, (used + 1, entries[at + 1][0], host, at + 1))
    return order
