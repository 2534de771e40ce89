"""Which free sub-nodes get the next jobs, with which slots. Pure: no I/O, no gevent.

Each host keeps a heap of its idle sub-nodes (by hosts.yaml order), so
starting, finishing and taking a sub-node down cost O(log n), and ordering
the k idle sub-nodes costs O(k log h) for h hosts: a hosts file of 10,000
sub-nodes schedules as fast as one of 10. Taking many sub-nodes down at once
(a host still connecting, a host lost) is one O(k) pass over each host's heap.

Slots (``slots``): a job holds the slots it was given on its host until it
finishes. A ``Plan`` places the next jobs one by one in queue order without
changing anything; the loop starts the ones it took. When no host declares
``slots``, a plan spreads jobs over hosts (least loaded first); when one
does, it packs them: the first host in hosts.yaml order that can allocate.
A ``slurm:`` entry's lanes hold no slots: Slurm allocates the GPUs, so a job
takes any free lane of it (carrying its GPU request: ``slurmentry.placed``).
"""

from __future__ import annotations

import heapq
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from pegasus import slots, slurmentry
from pegasus.model import Job, SubNode


class Scheduler:
    """Tracks which sub-nodes are busy or unusable and orders the free ones."""

    def __init__(self, nodes: Sequence[SubNode]):
        self.nodes = list(nodes)
        self.busy: Set[SubNode] = set()
        self.down: Set[SubNode] = set()
        self.down_on: Dict[str, int] = {}  # down sub-nodes per host
        self.load: Dict[str, int] = {}  # running jobs per host
        self.idle: Dict[str, List[Tuple[int, SubNode]]] = {}  # per host: heap by index
        for node in self.nodes:
            self.load.setdefault(node.hostname, 0)
            self.idle.setdefault(node.hostname, []).append((node.index, node))
        for heap in self.idle.values():
            heapq.heapify(heap)
        self.idle_count = len(self.nodes)
        self._free: Optional[List[SubNode]] = None  # free(), until something changes
        self.packing = any(node.slot_count for node in self.nodes)
        self.held: Dict[int, Set[int]] = {}  # per host (its first lane's index): slots in use
        self._running: Dict[SubNode, Tuple[int, ...]] = {}  # each busy lane's slots
        self.leaving: Set[SubNode] = set()  # removed while busy: no job after this one

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

    def plan(self, gpus: Optional["GpuUse"] = None) -> "Plan":
        return Plan(self, gpus or GpuUse())

    def start(self, nodes: Iterable[SubNode]) -> None:
        """Each sub-node runs a job, holding the slots it carries (``node.slots``)."""
        for node in nodes:
            held = self.held.setdefault(node.colour, set())
            if node in self.busy or node in self.down or held & set(node.slots):
                raise ValueError(f"{node.label} is not free")
            self._leave_idle(node)
            self.busy.add(node)
            self.load[node.hostname] += 1
            held.update(node.slots)
            self._running[node] = node.slots

    def finish(self, node: SubNode) -> None:
        if node in self.busy:
            self.busy.discard(node)
            self.load[node.hostname] -= 1
            self.held[node.colour].difference_update(self._running.pop(node, ()))
            if node in self.leaving:
                self.leaving.discard(node)
            elif node not in self.down:
                self._enter_idle(node)

    def add(self, nodes: Sequence[SubNode]) -> None:
        """New sub-nodes (hosts.yaml changed), down until ``bring_up``."""
        for node in nodes:
            self.nodes.append(node)
            self.load.setdefault(node.hostname, 0)
            self.idle.setdefault(node.hostname, [])
            self._set_down(node, True)
        self.packing = any(node.slot_count for node in self.nodes)

    def remove(self, nodes: Sequence[SubNode]) -> None:
        """Sub-nodes gone from hosts.yaml: no more jobs; a busy one finishes its job."""
        gone = set(nodes)
        for node in gone:
            if node in self.down:
                self._set_down(node, False)
            elif node not in self.busy:
                self._leave_idle(node)
            if node in self.busy:
                self.leaving.add(node)
        self.nodes = [node for node in self.nodes if node not in gone]
        self.packing = any(node.slot_count for node in self.nodes)

    def take_down(self, node: SubNode) -> None:
        """The sub-node's host is unusable: give it no more jobs."""
        if node not in self.down:
            self._set_down(node, True)
            if node not in self.busy:
                self._leave_idle(node)

    def take_down_all(self, nodes: Iterable[SubNode]) -> None:
        """``take_down`` each: O(k) for a host's k idle sub-nodes, not O(k) each."""
        leaving = [node for node in dict.fromkeys(nodes) if node not in self.down]
        for node in leaving:
            self._set_down(node, True)
        idle: Dict[str, Set[SubNode]] = {}
        for node in leaving:
            if node not in self.busy:
                idle.setdefault(node.hostname, set()).add(node)
        for host, gone in idle.items():
            self.idle[host] = [entry for entry in self.idle[host] if entry[1] not in gone]
            heapq.heapify(self.idle[host])
            self.idle_count -= len(gone)
            self._free = None

    def bring_up(self, node: SubNode) -> None:
        """The sub-node can take jobs again."""
        if node in self.down:
            self._set_down(node, False)
            if node not in self.busy:
                self._enter_idle(node)

    def has_down(self, host: str) -> bool:
        """Whether a sub-node of ``host`` is down (O(1))."""
        return self.down_on.get(host, 0) > 0

    def is_busy(self, node: SubNode) -> bool:
        return node in self.busy

    def is_down(self, node: SubNode) -> bool:
        return node in self.down

    @property
    def running(self) -> int:
        return len(self.busy)

    def _set_down(self, node: SubNode, down: bool) -> None:
        if down:
            self.down.add(node)
        else:
            self.down.discard(node)
        self.down_on[node.hostname] = self.down_on.get(node.hostname, 0) + (1 if down else -1)

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


@dataclass(frozen=True)
class GpuUse:
    """What the GPU probes say, for a plan (see ``probing``).

    ``skipped``: per probed host (its first lane's index), the slots whose
    GPU others use, or None while that is not known (a job that could go
    there waits). ``probing``: lanes running a probe (they take no job).
    """

    skipped: Mapping[int, Optional[FrozenSet[int]]] = field(default_factory=dict)
    probing: AbstractSet[SubNode] = frozenset()


class Plan:
    """Where the next jobs would run, placed one by one in queue order.

    Changes nothing: the scheduler only hears of the jobs the loop took
    (``Scheduler.start`` with the sub-nodes ``place`` returned).
    ``waits_for``: the probed hosts a job waited for (their GPUs not known
    yet, or their one free lane probing).
    """

    def __init__(self, scheduler: Scheduler, gpus: GpuUse = GpuUse()):
        self.scheduler = scheduler
        free = scheduler.free()
        self.want = len(free)
        self.waits_for: Set[int] = set()
        if scheduler.packing:  # hosts in hosts.yaml order, each with its free lanes
            self.hosts: Dict[int, List[SubNode]] = {}
            self.totals: Dict[int, int] = {}
            self.probing: Set[int] = set()  # hosts with a free lane that probes
            for node in sorted(free, key=lambda n: n.index):
                lanes = self.hosts.setdefault(node.colour, [])
                self.totals[node.colour] = node.total_slots
                if node in gpus.probing:
                    self.probing.add(node.colour)
                else:
                    lanes.append(node)
            self.order = sorted(self.hosts)
            self.held = {h: set(scheduler.held.get(h, ())) for h in self.order}
            self.skipped = gpus.skipped
            self.first = 0  # hosts before it have no free lane left
        else:
            self.free = free[::-1]  # popped from the end, in order

    def place(self, job: Job, avoid: AbstractSet[SubNode] = frozenset()) -> Optional[SubNode]:
        """The sub-node, with its slots, the job would run on; None: it waits.
        ``avoid``: where an earlier attempt failed (a retry): another host if one
        is free, else another sub-node, else one of those."""
        if not self.scheduler.packing:
            if not self.free:  # every host has one slot, every job needs one
                return None
            if slurmentry.wants_several(job):  # only Slurm can give it, on these hosts
                return self._slurm_lane(job)
            node = self.free.pop(_preferred(self.free[::-1], avoid, len(self.free))
                                 if avoid else -1)
            return slurmentry.placed(node, job) if node.slurm else replace(node, slots=(0,))
        params = dict(job.params)
        count = slots.count_of(params.get("slots", "1"))
        policy = params.get("allocation_policy")
        while self.first < len(self.order) and self._spent(self.order[self.first]):
            self.first += 1  # hosts with no free lane left are passed over once
        order = self.order[self.first:]
        if avoid:  # hosts where it failed last (sorted is stable)
            failed = {node.colour for node in avoid}
            order = sorted(order, key=lambda host: host in failed)
        for host in order:
            lanes = self.hosts[host]
            if self._spent(host):
                continue
            if lanes and lanes[0].slurm:
                return slurmentry.placed(lanes.pop(_preferred(lanes, avoid, 0)), job)
            skipped = self.skipped.get(host, frozenset())
            free = set(range(self.totals[host])) - self.held[host] - (skipped or set())
            chosen = slots.allocate(free, count, policy)
            if chosen is not None and (skipped is None or not lanes):
                self.waits_for.add(host)  # it may go there: wait for the probe
                return None
            if chosen is not None:
                self.held[host].update(chosen)
                lane = _preferred(lanes, avoid, 0) if avoid else 0
                return replace(lanes.pop(lane), slots=chosen)
        return None

    def _slurm_lane(self, job: Job) -> Optional[SubNode]:
        """The first free Slurm lane (hosts without ``slots`` have one slot each)."""
        for index in range(len(self.free) - 1, -1, -1):
            if self.free[index].slurm:
                return slurmentry.placed(self.free.pop(index), job)
        return None

    def _spent(self, host: int) -> bool:
        """No free lane left (a lane that probes will be free soon)."""
        return not self.hosts[host] and host not in self.probing


def _preferred(nodes: Sequence[SubNode], avoid: AbstractSet[SubNode], size: int) -> int:
    """The index of the first of ``nodes`` on a host not in ``avoid``, else of the
    first not in ``avoid``, else of the first; ``size``: counted from the end (the
    index in a reversed list of that size), 0: from the start."""
    if avoid:
        hosts = {node.hostname for node in avoid}
        for good in (lambda n: n.hostname not in hosts, lambda n: n not in avoid):
            for index, node in enumerate(nodes):
                if good(node):
                    return size - 1 - index if size else index
    return size - 1 if size else 0
