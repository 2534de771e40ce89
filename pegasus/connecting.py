"""Connections to sub-nodes: all opened at once at start, again after a loss.

Host names are resolved with ``ssh -G`` (a few at a time in threads); each
host's sub-nodes connect as soon as its answer is in: one executor per sub-node, every sub-node at once but at most
``CONNECTS_PER_HOST`` handshakes per host at a time (sshd's ``MaxStartups``
starts dropping at 10). ``Hosts`` is the one place where sub-nodes go down
and come back during a run. With ``modes``, ``running``, ``probing`` and
``controlserver``, the only code that spawns greenlets. Failures are values: ``HostError``s, for the caller to report.
"""

from __future__ import annotations

import functools
import random
import time
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import gevent
from gevent.lock import BoundedSemaphore
from gevent.threadpool import ThreadPool

from pegasus import executor, slurmentry, sshconfig
from pegasus.local import LocalExecutor
from pegasus.errors import HostError
from pegasus.events import HostBack, HostFailed, HostRefused, HostSilent
from pegasus.model import SubNode
from pegasus.words import plural

CONNECTS_PER_HOST = 8
RETRY_FIRST, RETRY_MAX = 2.0, 30.0  # seconds between reconnection attempts
PAUSED = 5.0  # a watch step this late means Pegasus was paused (Ctrl-z, a laptop lid)


class Connector:
    def __init__(self, nodes: Sequence[SubNode], ssh_config: Optional[str],
                 orphan_timeout: int = executor.ORPHAN_TIMEOUT, queue_key: str = ""):
        self.orphan_timeout, self.ssh_config = orphan_timeout, ssh_config
        self.queue_key = queue_key  # control.key of the queue: Slurm steps carry it
        names = list(dict.fromkeys(n.hostname for n in nodes
                                   if not n.is_local and not n.slurm))
        self.targets: Dict[str, object] = {}
        self.limits = {name: BoundedSemaphore(CONNECTS_PER_HOST) for name in names}
        # ``ssh -G`` for every host at once, 8 at a time in threads: a host
        # connects as soon as its own answer is in, while the others still resolve.
        self._pool = ThreadPool(min(8, len(names))) if names else None
        self._resolving = {name: self._pool.spawn(sshconfig.resolve, name, ssh_config)
                           for name in names}

    @functools.cached_property
    def partitions(self):
        """``slurm:`` entries' executors, each partition checked once (slurm.py is
        loaded for the first: a run without Slurm needs none of it)."""
        from pegasus import slurm

        return slurm.Partitions(self.queue_key)

    def connect(self, node: SubNode):
        """An executor for one sub-node; raises HostError."""
        if node.is_local:
            return LocalExecutor()
        if node.slurm:
            return self.partitions.executor(node)
        target = self.target(node.hostname)
        from pegasus import ssh  # parallel-ssh: only when a host is not local (start-up)
        with self.limits[node.hostname]:
            return ssh.connect(target, self.orphan_timeout)

    def target(self, name: str):
        """The host's ``SshTarget`` (waits for its ``ssh -G``); raises HostError."""
        if name not in self.targets:
            pending = self._resolving.get(name)
            if pending is not None:
                self.targets.setdefault(name, pending.get())
            else:  # a host added to hosts.yaml while running
                self._resolve(name)
        return self.targets[name]

    def resolve_all(self) -> None:
        """Wait for every host's ``ssh -G``; the first host in order that
        ssh_config cannot resolve raises its HostError."""
        try:
            for name in list(self._resolving):
                self.target(name)
        finally:
            if self._pool is not None:
                self._pool.kill()
            self._resolving = {}

    def _resolve(self, name: str) -> None:
        """``ssh -G`` in a thread (the loop goes on); raises HostError."""
        target = gevent.get_hub().threadpool.apply(sshconfig.resolve, (name, self.ssh_config))
        self.targets.setdefault(name, target)
        self.limits.setdefault(name, BoundedSemaphore(CONNECTS_PER_HOST))

    def connect_all(self, nodes: Sequence[SubNode], wait: Optional[float] = None):
        """Connect every sub-node at once; wait for all, or ``wait`` seconds at most.

        Returns (executors of the sub-nodes reached, the errors (one per
        message), the greenlets of the connections still being made). A host
        ssh_config cannot resolve raises its HostError, nothing left open.
        """
        greenlets = {node: gevent.spawn(self.connect_or_error, node) for node in nodes}
        try:
            self.resolve_all()
        except BaseException:
            gevent.killall(list(greenlets.values()))
            close_all([g.value for g in greenlets.values()
                       if g.successful() and not isinstance(g.value, (HostError, gevent.GreenletExit))])
            raise
        gevent.joinall(list(greenlets.values()), timeout=wait)
        made = {node: g.value for node, g in greenlets.items() if g.ready()}
        failed = [v for v in made.values() if isinstance(v, HostError)]
        unique = list({str(err): err for err in failed}.values())
        pending = {node: g for node, g in greenlets.items() if not g.ready()}
        return ({n: v for n, v in made.items() if not isinstance(v, HostError)}, unique,
                pending)

    def connect_or_error(self, node: SubNode):
        """``connect``, with a HostError returned, not raised (a greenlet's value).
        Anything else it raises is a bug: that host's error too, in words (a
        greenlet that raised has no value, and would pass for an executor)."""
        try:
            return self.connect(node)
        except HostError as err:
            return err
        except Exception as err:  # noqa: BLE001 - a bug must not end the run
            return HostError(node.hostname, f"internal error while connecting: {err!r}")

    def reconnect(self, nodes: Sequence[SubNode], is_idle: Callable[[SubNode], bool],
                  report: Callable[[SubNode, object], None]) -> None:
        """Try the sub-nodes of a lost host until all are back (runs in a greenlet).

        ``report(node, executor)`` for each sub-node back; ``report(node,
        error)`` once, and the end of trying, when the host refuses us for
        good (changed host key, login refused).
        """
        delay, waiting = RETRY_FIRST, list(nodes)
        while waiting:
            gevent.sleep(delay * (0.8 + 0.4 * random.random()))
            for node in [n for n in waiting if is_idle(n)]:
                made = self.connect_or_error(node)
                if isinstance(made, HostError):
                    if made.fatal:
                        return report(node, made)
                    break
                waiting.remove(node)
                report(node, made)
            delay = min(delay * 2, RETRY_MAX)


class Hosts:
    """The sub-nodes' executors; which are down; reconnecting in the background.

    ``scheduler`` hears which sub-nodes are down (it gives them no jobs);
    ``post`` receives ``HostBack``/``HostRefused`` events from the
    reconnecting greenlets, for the loop to hand back to ``back``.
    """

    def __init__(self, nodes: Sequence[SubNode], executors: Dict[SubNode, object],
                 connecting: Dict[SubNode, gevent.Greenlet], failed: Sequence[HostError],
                 connector, scheduler, sink, post: Callable[[object], None]):
        self.nodes, self.executors = list(nodes), dict(executors)
        self.connecting = dict(connecting)  # first connections still being made
        self.connector, self.scheduler, self.sink, self.post = connector, scheduler, sink, post
        self.reconnecting: Dict[str, List[gevent.Greenlet]] = {}  # hosts not all up yet
        self.errors = {err.host: err for err in failed}  # the failure said for each host
        self.was_up = {node.hostname for node in executors}  # hosts connected before
        self.refused: List[HostError] = []  # hosts that refuse us for good
        self.by_host: Dict[str, List[SubNode]] = {}
        self.live: Set[SubNode] = set()
        self._group()
        self.leaving: Set[SubNode] = set()  # gone from hosts.yaml, their job still running

    def _group(self) -> None:
        self.by_host = {}
        for node in self.nodes:
            self.by_host.setdefault(node.hostname, []).append(node)
        self.live = set(self.nodes)  # is_live: O(1), not a search of the host's list

    def start(self) -> None:
        """Wait in the background for the first connections still being made;
        keep trying the sub-nodes that could not be reached at start."""
        self._wait_first(self.connecting)
        self._reconnect([n for n in self.nodes
                         if n not in self.executors and n not in self.connecting])

    def _wait_first(self, greenlets: Dict[SubNode, gevent.Greenlet]) -> None:
        self.scheduler.take_down_all(greenlets)
        for node, greenlet in greenlets.items():
            self.reconnecting.setdefault(node.hostname, []).append(greenlet)
            greenlet.rawlink(lambda g, node=node: self._first(node, g.value))

    def change(self, added: Sequence[SubNode], removed: Sequence[SubNode]) -> None:
        """hosts.yaml changed (``hostswatch``): ``removed`` take nothing new (a running
        job finishes, then its connection closes: ``ended``); ``added`` connect in the
        background and take jobs once connected."""
        gone = set(removed)
        self.nodes = [node for node in self.nodes if node not in gone] + list(added)
        self._group()
        self.leaving.update(node for node in removed if self.scheduler.is_busy(node))
        self.scheduler.remove(removed)
        for node in removed:
            greenlet = self.connecting.pop(node, None)
            if greenlet is not None:
                greenlet.kill(block=False)
        for host in {node.hostname for node in removed} & set(self.reconnecting):
            self.stop_host(host)  # then again for the sub-nodes it keeps, if any
            waiting = [n for n in self.by_host.get(host, ()) if self.scheduler.is_down(n)]
            for node in waiting:
                self.connecting.pop(node, None)
            self._reconnect(waiting)
        idle = [self.executors.pop(node) for node in removed
                if node in self.executors and node not in self.leaving]
        gevent.spawn(close_all, idle)  # the loop never waits for a host to say goodbye
        self.scheduler.add(added)
        first = {node: gevent.spawn(self.connector.connect_or_error, node) for node in added}
        self.connecting.update(first)
        self._wait_first(first)

    def ended(self, node: SubNode) -> None:
        """A job ended on ``node``: if it is gone from hosts.yaml, close its connection."""
        if node in self.leaving:
            self.leaving.discard(node)
            gevent.spawn(close_all, [self.executors.pop(node)])

    def is_live(self, node: SubNode) -> bool:
        """Whether ``node`` is in hosts.yaml (as last read well)."""
        return node in self.live

    def failed_errors(self) -> List[HostError]:
        return list(self.errors.values()) + self.refused

    def hopeless(self) -> bool:
        """No sub-node was ever reached and no first connection is still being made."""
        return not self.was_up and not self.executors and not self.connecting

    def executor(self, node: SubNode):
        return self.executors[node]

    def lose_host(self, node: SubNode) -> None:
        """Its host gives no more jobs until a new connection is made."""
        if not self.is_live(node):
            return
        up = [n for n in self.by_host[node.hostname] if not self.scheduler.is_down(n)]
        if node.is_local or not up:
            return
        if node.hostname not in self.reconnecting:
            self.sink.message(f"host {node.hostname}: connection lost; its sub-nodes "
                              "take no more jobs; reconnecting in the background")
        self._reconnect(up)

    def lose_sub_node(self, node: SubNode, why: str) -> None:
        """Lock-step: a lost sub-node stays out for the rest of the run."""
        if self.scheduler.is_down(node) or not self.is_live(node):
            return
        self.scheduler.take_down(node)
        self.sink.message(f"{node.label}: {why}; it takes no further steps")

    def back(self, event) -> None:
        """A ``HostBack``, ``HostFailed`` or ``HostRefused`` from a connecting greenlet."""
        node = event.node
        first = self.connecting.pop(node, None) is not None  # not connected before
        if not self.is_live(node):  # gone from hosts.yaml while connecting
            if isinstance(event, HostBack):
                gevent.spawn(event.executor.close)
            return None
        if isinstance(event, HostFailed):
            return self._failed(node, event.error)
        if isinstance(event, HostRefused):
            self.stop_host(node.hostname)
            if any(err.host == event.error.host for err in self.refused):
                return None  # another of its sub-nodes said it: once a host
            self.refused.append(event.error)
            return self.sink.message(f"{event.error}; it is left out for the rest "
                                     "of the run")
        old = self.executors.get(node)
        if old is not None:
            old.close()
        self.executors[node] = event.executor
        self.scheduler.bring_up(node)
        if not self.scheduler.has_down(node.hostname):
            self.stop_host(node.hostname)
            again = " again" if (node.hostname in self.was_up and not first) or \
                node.hostname in self.errors else ""
            self.sink.message(f"host {node.hostname}: connected; taking jobs{again}")
            self.was_up.add(node.hostname)  # all its sub-nodes: a host of lanes says it once

    def _failed(self, node: SubNode, error: HostError) -> None:
        """A first connection failed: say so once per host, and keep trying."""
        host = node.hostname
        if host not in self.errors:
            self.errors[host] = error
            self.sink.message(f"{error}; " + ("running on the other hosts and retrying this "
                              "one" if self.executors else "retrying") + " in the background")
        self.reconnecting.setdefault(host, []).append(gevent.spawn(
            self.connector.reconnect, [node], self._idle, self._report))

    def stop_host(self, host: str) -> None:
        """No more connecting to this host."""
        gevent.killall([g for g in self.reconnecting.pop(host, []) if g is not gevent.getcurrent()],
                       block=False)

    def stop(self) -> None:
        gevent.killall([g for gs in self.reconnecting.values() for g in gs])

    def close(self) -> None:
        close_all(self.executors.values())

    def silent(self, host: str, seconds: float, abandon, lost) -> None:
        """A hung host: give up on its jobs (``abandon``: outcome unknown) and on
        its sub-nodes for now (``lost``, the loop's ``host_lost``)."""
        nodes = [n for n in self.nodes if n.hostname == host]
        leaving = [n for n in self.leaving if n.hostname == host]  # gone from hosts.yaml
        running = [n for n in nodes + leaving if self.scheduler.is_busy(n)]
        self.sink.message(f"host {host}: not responding for {seconds:.0f} s" +
                          (f"; its {plural(len(running), 'running job')} "
                           f"{'is' if len(running) == 1 else 'are'} reported lost (outcome "
                           "unknown)" if running else ""))
        for node in running:
            abandon(node, f"host not responding for {seconds:.0f} s")
        for node in nodes:
            if not self.scheduler.is_down(node):
                lost(node, "not responding")

    def _reconnect(self, nodes: Sequence[SubNode]) -> None:
        self.scheduler.take_down_all(nodes)
        by_host: Dict[str, List[SubNode]] = {}
        for node in nodes:
            by_host.setdefault(node.hostname, []).append(node)
        for host, group in by_host.items():
            self.reconnecting.setdefault(host, []).append(gevent.spawn(
                self.connector.reconnect, group, self._idle, self._report))

    def _idle(self, node: SubNode) -> bool:
        return not self.scheduler.is_busy(node)

    def _report(self, node: SubNode, made) -> None:
        self.post(HostRefused(node, made) if isinstance(made, HostError)
                  else HostBack(node, made))

    def _first(self, node: SubNode, made) -> None:
        """A first connection made in the background has ended."""
        if made is None or isinstance(made, gevent.GreenletExit):  # killed: over, or removed
            return
        if isinstance(made, HostError) and not made.fatal:
            return self.post(HostFailed(node, made))
        self._report(node, made)


class Watch:
    """Remote jobs hear from Pegasus (heartbeats); hosts that stopped answering are
    found (``HostSilent``, posted for the loop to hand to ``Hosts.silent``)."""

    def __init__(self, hosts: "Hosts"):
        self.hosts = hosts

    def run(self, busy: Callable[[], List[SubNode]]) -> None:
        """Remote jobs hear from Pegasus; hosts that stopped answering are found
        (``HostSilent``). Runs in its own greenlet while the loop runs.

        Silence is judged only while Pegasus itself has been reading for
        ``NOT_RESPONDING`` s: after a pause of Pegasus (Ctrl-z, a laptop lid)
        hosts had no keepalive to answer, and while job output waits for a
        stalled stdout their sockets are not read (their replies wait in the
        kernel's full buffers)."""
        awake_since = last = time.monotonic()
        while True:
            gevent.sleep(executor.HEARTBEAT)
            now = time.monotonic()
            if now - last > PAUSED or self.hosts.sink.output_held_since(last):
                awake_since = now
            last = now
            self.heartbeat(busy())
            if now - awake_since >= executor.NOT_RESPONDING:
                for host, seconds in self.silent_hosts():
                    self.hosts.post(HostSilent(host, seconds))

    def heartbeat(self, busy: Sequence[SubNode]) -> None:
        """Tell the remote watchdogs of these sub-nodes' jobs that Pegasus is there."""
        for node in busy:
            try:
                self.hosts.executors[node].heartbeat()
            except executor.ConnectionLost:
                pass  # its reader reports the lost connection

    def silent_hosts(self) -> List[Tuple[str, float]]:
        """Connected hosts that sent nothing for ``NOT_RESPONDING`` s: (host, seconds)."""
        found, by_host = [], self.hosts.by_host
        if self.hosts.leaving:  # gone from hosts.yaml, their last job running: hosts too
            by_host = {host: list(nodes) for host, nodes in by_host.items()}
            for node in self.hosts.leaving:
                by_host.setdefault(node.hostname, []).append(node)
        for host, nodes in by_host.items():
            if host not in self.hosts.reconnecting:
                seconds = self._silence(nodes)
                if seconds is not None:
                    found.append((host, seconds))
        return found

    def _silence(self, nodes: Sequence[SubNode]) -> Optional[float]:
        """How long a host's connections have all been silent, if for ``NOT_RESPONDING``
        s or more. Stops at the first connection heard from since: every second, a
        healthy host costs one ``silent_for`` (a getsockopt), not one per sub-node."""
        least = None
        for node in nodes:
            made = self.hosts.executors.get(node)
            if made is None or self.hosts.scheduler.is_down(node):
                continue
            seconds = made.silent_for()
            if seconds is None:
                continue
            if seconds < executor.NOT_RESPONDING:
                return None
            least = seconds if least is None else min(least, seconds)
        return least


def end_leftovers(queue_key: str, interrupted, say: Callable[[str], None]) -> None:
    """Jobs a dead Pegasus ran (``records.Interrupted``) that may outlive it where
    an executor can still end them: Slurm steps (srun killed before it cancelled
    its step; ``slurm.cancel_leftovers``). A remote job's wrapper stops it at the
    end of its channel."""
    on_slurm = [job_id for _, label, job_id in interrupted
                if slurmentry.is_lane(label) and job_id is not None]
    if on_slurm:  # docs/slurm.md
        from pegasus import slurm

        slurm.cancel_leftovers(queue_key, on_slurm, say)


def close_all(executors) -> None:
    """Close connections all at once (a hung host takes a second to give up on)."""
    gevent.joinall([gevent.spawn(ex.close) for ex in executors])
