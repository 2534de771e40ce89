"""hosts.yaml while a daemon runs: a change is picked up within ``POLL`` + ``QUIET`` s.

``Watch`` looks at the file's stat signature every ``POLL`` s (a stat, no
read, while nothing changes); a changed file is read once it is at rest
(``atrest``: not written for ``QUIET`` s, so a half-written file is never
read as a bad one; a file gone is said only once gone for ``QUIET`` s, since
some editors save by deleting and writing it anew), checked as at start (``Source.read``), and posted to the
loop as a ``HostsChanged``: its sub-nodes, or the error (said once per
error: the old host set stays until a good file comes). The loop, the one
owner of concurrency, calls ``apply``: the sub-nodes gone take nothing new
(their running jobs finish), the new ones connect in the background
(``connecting.Hosts.change``), queue entries are checked against the new set.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import gevent

from pegasus import atrest, expand, hostsfile, selection
from pegasus.errors import InputError, UsageError
from pegasus.events import HostsChanged
from pegasus.model import Job, SubNode
from pegasus.selection import Selection
from pegasus.words import plural

POLL = 0.5  # seconds between two looks at hosts.yaml's signature


def _stat(path: str) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except OSError:
        return None


@dataclass(frozen=True)
class Source:
    """Where a daemon's sub-nodes come from: hosts.yaml, and how it was first read."""

    path: str
    whole_hosts: bool  # broadcast: one sub-node per host, holding all its slots
    seen: Optional[atrest.Signature]  # the file as read at start
    selection: Selection = Selection()  # --limit, --exclude: applied to every read

    @classmethod
    def before_reading(cls, path: str, whole_hosts: bool,
                       chosen: Selection = Selection()) -> "Source":
        """Taken before the start-up read: a write during that read is a change."""
        return cls(path, whole_hosts, atrest.signature(_stat(path)), chosen)

    def read(self) -> List[SubNode]:
        """The sub-nodes, as at start (--limit and --exclude too); InputError names
        the file and entry, or the selection that keeps none of its hosts."""
        nodes = hostsfile.load(self.path)
        try:
            nodes = selection.select(nodes, self.selection, self.path)
        except UsageError as err:  # as bad a file as any other, for a daemon
            raise InputError(str(err)) from None
        return expand.whole_hosts(nodes) if self.whole_hosts else nodes


class Watch:
    """Posts a ``HostsChanged`` when hosts.yaml changed and is at rest: what was
    added and removed since the last good file (each change posted is applied
    by the loop, in order, so the two agree on the sub-nodes)."""

    def __init__(self, source: Source, nodes: Sequence[SubNode],
                 post: Callable[[object], None]):
        self.source, self.post = source, post
        self.nodes = list(nodes)  # as the loop has them once it applied what was posted
        self.next_index = max((node.index for node in nodes), default=-1) + 1
        self.rest = atrest.Rest(source.path)
        self.seen = source.seen
        self.said: Optional[str] = None  # the error last posted (each is said once)
        self.gone_since: Optional[float] = None  # monotonic: when the file was seen gone

    def run(self) -> None:
        """Runs in its own greenlet while the loop runs."""
        while True:
            gevent.sleep(POLL)
            event = self.look()
            if event is not None:
                self.post(event)

    def look(self) -> Optional[HostsChanged]:
        """The change to post, if the file changed and is at rest."""
        st = _stat(self.source.path)
        now = atrest.signature(st)
        if now == self.seen or not self.rest.at_rest(st) or self._just_gone(st):
            return None
        self.seen = now
        try:
            nodes = self.source.read()
        except InputError as err:
            said, self.said = self.said, str(err)
            return None if str(err) == said else HostsChanged(self.source.path, error=err)
        self.said = None
        added, removed = diff(self.nodes, nodes, self.next_index)
        self.next_index += max((node.index for node in nodes), default=-1) + 1
        gone = set(removed)
        self.nodes = [node for node in self.nodes if node not in gone] + added
        return HostsChanged(self.source.path, tuple(added), tuple(removed))


    def _just_gone(self, st: Optional[os.stat_result]) -> bool:
        """Gone for less than QUIET s: an editor that saves by deleting the file and
        writing it anew, not a removed file."""
        if st is not None:
            self.gone_since = None
            return False
        if self.gone_since is None:
            self.gone_since = time.monotonic()
        return time.monotonic() - self.gone_since < atrest.QUIET


class Check:
    """The queue entries' check (``expand.checker``) against the current sub-nodes."""

    def __init__(self, nodes: Sequence[SubNode]):
        self.use(nodes)

    def use(self, nodes: Sequence[SubNode]) -> None:
        self._check = expand.checker(nodes)

    def __call__(self, job: Job) -> None:
        self._check(job)


def diff(old: Sequence[SubNode], new: Sequence[SubNode],
         next_index: int) -> Tuple[List[SubNode], List[SubNode]]:
    """(added, removed): a sub-node whose entry changed (slots, parameters, ...) is
    both. Added ones are numbered from ``next_index`` (hosts.yaml order among
    themselves; lanes of a host keep their shared first index)."""
    before: Dict[tuple, SubNode] = {_identity(node): node for node in old}
    after = {_identity(node): node for node in new}
    removed = [node for key, node in before.items() if key not in after]
    added = [replace(node, index=node.index + next_index)
             for key, node in after.items() if key not in before]
    return added, removed


def _identity(node: SubNode) -> tuple:
    """What makes an entry's sub-node the same after a change (not its place)."""
    return (node.hostname, node.params, node.lane, node.slot_count, node.copy, node.probe,
            node.cancel, node.slurm)  # a slurm: entry's options too


def apply(loop, event: HostsChanged) -> None:
    """What the loop does with a ``HostsChanged`` (``modes.Loop.handle``)."""
    sink = loop.run.sink
    if event.error is not None:
        return sink.message(f"{event.error.advising(None)}\n(the hosts of the run are "
                            "kept until the file is fixed)")
    if not (event.added or event.removed):
        return sink.message(f"{event.path} changed; its sub-nodes are the same")
    loop.hosts.change(event.added, event.removed)
    loop.hosts_changed(event.added, event.removed)
    loop.run.check.use(loop.hosts.nodes)
    loop.head.hosts_changed()
    return sink.message(_words(event.path, event.added, event.removed, loop.scheduler))


def _words(path: str, added, removed, scheduler) -> str:
    said = []
    if added:
        said.append(f"{plural(len(added), 'sub-node')} added ({_labels(added)}): "
                    "connecting; they take jobs once connected")
    if removed:
        busy = sum(scheduler.is_busy(node) for node in removed)
        said.append(f"{plural(len(removed), 'sub-node')} removed ({_labels(removed)}): "
                    "they take nothing new" + (f"; {plural(busy, 'running job')} "
                                               "finishing" if busy else ""))
    return f"{path} changed: " + "; ".join(said)


def _labels(nodes: Sequence[SubNode], shown: int = 5) -> str:
    names = list(dict.fromkeys(node.label for node in nodes))
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")
