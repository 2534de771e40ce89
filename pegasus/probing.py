"""GPU probes in queue mode: which GPUs of hosts with ``gpu_probe`` others use.

Before Pegasus places a job on such a host it runs the probe (``gpuprobe``'s
two queries) on one of the host's idle lanes, on the connection that lane
already holds, in a greenlet of its own; the loop hears the answer as a
``ProbeDone`` event and the plan reads the latest answers (``view``). With
``modes``, ``running``, ``connecting`` and ``controlserver``, the only code
that spawns greenlets (tests/test_structure.py).

A host's answer is used for ``FRESH`` s; a take probes it again once the
answer is ``REFRESH`` s old, and while the queue's head waits, a host with
GPUs in foreign use (or a failing probe) is probed every ``RECHECK`` s. Until
a host has an answer, a job that could go there waits for it (hosts.yaml
order is kept); a lane that probes takes no job. A failed probe never means
"free": all the host's slots are skipped until a probe succeeds.
Pegasus's allocations are the truth: a GPU it gave out when the probe
started, or gives out while it runs, is never counted as in foreign use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Dict, FrozenSet, List, Optional, Set

import gevent

from pegasus import gpuprobe
from pegasus.events import ProbeDone, ProbeDue
from pegasus.executor import ConnectionLost, NotStarted, Orphaned
from pegasus.model import GpuProbe, SubNode
from pegasus.scheduler import GpuUse

FRESH = 5.0  # seconds a probe's answer is used for placing jobs
REFRESH = 3.0  # a take probes a host again once its answer is this old
RECHECK = 3.0  # seconds between probes of a blocked host while the queue's head waits
PROBE_TIMEOUT = 30.0  # seconds before a probe is cancelled (and counts as failed)
GIVE_UP = 10.0  # seconds after that cancel before its connection counts as lost
OUTPUT_LIMIT = 1 << 20  # bytes of a probe's output kept


class ProbeFailed(Exception):
    """The probe ran and said nothing usable (its message says why, in words)."""


class Heard(Enum):
    """What the loop does after a probe's answer."""

    NOTHING = "no placement can change"
    WAKE = "the head may have a place now"
    LOST = "the lane's connection is lost"


@dataclass
class _Host:
    """One probed host: its lanes, its latest answer, its running probe."""

    name: str
    probe: GpuProbe
    slot_count: int
    lanes: List[SubNode] = field(default_factory=list)
    when: Optional[float] = None  # when the latest answer came (None: none yet)
    busy: FrozenSet[int] = frozenset()  # the slots that answer skips (all: it failed)
    failure: Optional[str] = None  # why the latest probe failed
    said: Optional[object] = None  # what was last said (the skipped GPUs, or a failure)
    lane: Optional[SubNode] = None  # the lane probing now
    executor: object = None  # its executor
    own: FrozenSet[int] = frozenset()  # slots Pegasus held when that probe started
    greenlet: Optional[gevent.Greenlet] = None  # the probe's
    timer: Optional[gevent.Greenlet] = None  # the next recheck

    def known(self, now: float) -> bool:
        return self.when is not None and now - self.when < FRESH


class Probes:
    """The GPU probes of one run's hosts with ``gpu_probe``."""

    def __init__(self, nodes, hosts, scheduler, sink, post: Callable[[object], None]):
        self.hosts, self.scheduler, self.sink, self.post = hosts, scheduler, sink, post
        self.by_colour: Dict[int, _Host] = {}
        for node in nodes:
            if node.probe is not None:
                self.by_colour.setdefault(node.colour, _Host(
                    node.hostname, node.probe, node.total_slots)).lanes.append(node)

    def change(self, added, removed) -> None:
        """hosts.yaml changed: probe the hosts added, forget those removed."""
        for colour in {node.colour for node in removed} & set(self.by_colour):
            host = self.by_colour.pop(colour)
            gevent.killall([g for g in (host.timer, host.greenlet) if g is not None],
                           block=False)
        for node in added:
            if node.probe is not None:
                self.by_colour.setdefault(node.colour, _Host(
                    node.hostname, node.probe, node.total_slots)).lanes.append(node)

    def refresh(self) -> None:
        """Before a take: probe hosts whose answer is old; keep blocked hosts rechecked."""
        now = time.monotonic()
        for host in self.by_colour.values():
            if host.lane is None and (host.when is None or now - host.when >= REFRESH):
                self._start(host)
            elif self._blocked(host) and host.timer is None:
                host.timer = gevent.spawn_later(RECHECK, self.post, ProbeDue(host.lanes[0]))

    def view(self) -> GpuUse:
        """What the plan may use: per host the skipped slots (None: not known yet)."""
        now = time.monotonic()
        skipped = {colour: host.busy if host.known(now) else None
                   for colour, host in self.by_colour.items()}
        probing = frozenset(h.lane for h in self.by_colour.values() if h.lane is not None)
        return GpuUse(skipped, probing)

    def due(self, event: ProbeDue, wanted: bool) -> None:
        """A recheck's time: probe again if the head still waits."""
        host = self.by_colour.get(event.node.colour)
        if host is None:  # removed from hosts.yaml
            return
        host.timer = None
        if wanted and host.lane is None and self._blocked(host):
            self._start(host)

    def done(self, event: ProbeDone, held: Set[int], awaited: bool) -> Heard:
        """A probe's answer; ``held``: the host's slots Pegasus holds now;
        ``awaited``: a job waited for this host at the last take."""
        host = self.by_colour.get(event.node.colour)
        if host is None:  # removed from hosts.yaml while it was probed
            return Heard.NOTHING
        executor, host.lane, host.executor, host.greenlet = host.executor, None, None, None
        if event.lost and not event.node.is_local:
            host.when = None  # not known: probed again once the host is back
            return Heard.LOST if self.hosts.executors.get(event.node) is executor \
                else Heard.WAKE if awaited else Heard.NOTHING
        before = host.busy if host.when is not None else frozenset(range(host.slot_count))
        if event.failure is not None:
            self._failed(host, event.failure)
        else:
            self._answered(host, event.reading, frozenset(held) | host.own)
        if self._blocked(host) and host.timer is None:
            host.timer = gevent.spawn_later(RECHECK, self.post, ProbeDue(event.node))
        return Heard.WAKE if awaited or before - host.busy else Heard.NOTHING

    def may_free(self) -> bool:
        """Whether a probe may yet free GPUs (a host is blocked, or being probed)."""
        return any(self._blocked(h) or h.lane is not None for h in self.by_colour.values())

    def stop(self) -> None:
        """The run is over: no more probes or rechecks."""
        gevent.killall([g for h in self.by_colour.values() for g in (h.timer, h.greenlet)
                        if g is not None], block=False)

    # -- inside

    def _start(self, host: _Host) -> None:
        lane = next((n for n in host.lanes if not self.scheduler.is_busy(n)
                     and not self.scheduler.is_down(n)), None)
        if lane is None:
            return  # every lane runs a job or is down: nothing could go there now
        host.lane, host.executor = lane, self.hosts.executor(lane)
        host.own = frozenset(self.scheduler.held.get(lane.colour, ()))
        host.greenlet = gevent.spawn(_probe, host.executor, lane, host.probe.command,
                                     self.post)

    def _blocked(self, host: _Host) -> bool:
        return host.when is not None and bool(host.busy)

    def _failed(self, host: _Host, why: str) -> None:
        host.when, host.busy, host.failure = time.monotonic(), \
            frozenset(range(host.slot_count)), why
        if host.said != why:
            host.said = why
            self.sink.message(f"host {host.name}: its GPU probe failed: {why}; it takes "
                              "no job until a probe succeeds (Pegasus tries again)")

    def _answered(self, host: _Host, reading: gpuprobe.Reading, own: FrozenSet[int]) -> None:
        found = gpuprobe.busy(reading, host.slot_count, host.probe.busy_mib)
        others = {slot: why for slot, why in found.items() if slot not in own}
        host.when, host.busy = time.monotonic(), frozenset(others)
        if host.failure is not None:
            host.failure = None
            self.sink.message(f"host {host.name}: its GPU probe works again")
        said = host.said if isinstance(host.said, frozenset) else frozenset()
        if said != set(others):
            self.sink.message(gpuprobe.describe(host.name, others))
        host.said = frozenset(others)


def _probe(executor, lane: SubNode, command: str, post) -> None:
    """One probe of one host on one lane's executor (runs in its own greenlet)."""
    reading, failure, lost = None, None, False
    try:
        reading = measure(executor, command)
    except ProbeFailed as err:
        failure = str(err)
    except (NotStarted, ConnectionLost, Orphaned) as err:
        failure, lost = f"its connection failed ({err})", True
    except Exception as err:  # noqa: BLE001 - a bug must not hang the loop
        failure = f"internal error: {err!r}"
    post(ProbeDone(lane, reading, failure, lost))


def measure(executor, command: str) -> gpuprobe.Reading:
    """Both queries on one executor; ProbeFailed (in words) unless both read well."""
    answers = []
    for query in (gpuprobe.GPU_QUERY, gpuprobe.APPS_QUERY):
        asked = f"{command} {query}"
        text = _ask(executor, asked)
        try:
            answers.append(gpuprobe.parse_gpus(text) if query == gpuprobe.GPU_QUERY
                           else gpuprobe.parse_apps(text))
        except ValueError as err:
            raise ProbeFailed(f"'{asked}' printed what is not nvidia-smi's answer: "
                              f"{err}") from None
    return gpuprobe.Reading(*answers)


def _ask(executor, command: str) -> str:
    """The command's standard output; ProbeFailed unless it exits 0 in time."""
    out = {"stdout": bytearray(), "stderr": bytearray()}
    late: List[bool] = []

    def keep(stream: str, data: bytes) -> None:
        kept = out[stream]
        kept.extend(data[:max(0, OUTPUT_LIMIT - len(kept))])

    def cancel() -> None:
        late.append(True)
        executor.cancel()
    timer = gevent.spawn_later(PROBE_TIMEOUT, cancel)
    try:
        with gevent.Timeout(PROBE_TIMEOUT + GIVE_UP, ConnectionLost(
                f"no answer {PROBE_TIMEOUT + GIVE_UP:g} s after the probe started")):
            status = executor.run(command, keep)
    finally:
        timer.kill()
    if late:
        raise ProbeFailed(f"'{command}' did not answer in {PROBE_TIMEOUT:g} s")
    if status != 0:
        said = _first_line(bytes(out["stdout"] + out["stderr"]))
        raise ProbeFailed(f"'{command}' exited with status {status}" +
                          (f": {said}" if said else ""))
    return bytes(out["stdout"]).decode("utf-8", "replace")


def _first_line(data: bytes, limit: int = 200) -> str:
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines()]
    line = next((line for line in lines if line), "")
    return line if len(line) <= limit else line[:limit] + "..."
