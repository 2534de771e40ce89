"""Opening connections to sub-nodes: all at once at start, again after a loss.

Host names are resolved with ``ssh -G`` (a few at a time in threads); then
one executor is opened per sub-node, every sub-node at once but at most
``CONNECTS_PER_HOST`` handshakes per host at a time (sshd's ``MaxStartups``
starts dropping at 10). Besides ``modes``, the only module that spawns
greenlets. Failures are values: ``HostError``s, for the caller to report.
"""

from __future__ import annotations

import random
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import gevent
from gevent.lock import BoundedSemaphore
from gevent.threadpool import ThreadPool

from pegasus import executor, sshconfig
from pegasus.errors import HostError
from pegasus.model import SubNode

CONNECTS_PER_HOST = 8
RETRY_FIRST, RETRY_MAX = 2.0, 30.0  # seconds between reconnection attempts


class Connector:
    def __init__(self, nodes: Sequence[SubNode], ssh_config: Optional[str]):
        names = list(dict.fromkeys(n.hostname for n in nodes if not n.is_local))
        self.targets = _resolve_all(names, ssh_config)
        self.limits = {name: BoundedSemaphore(CONNECTS_PER_HOST) for name in names}

    def connect(self, node: SubNode):
        """An executor for one sub-node; raises HostError."""
        if node.is_local:
            return executor.LocalExecutor()
        with self.limits[node.hostname]:
            return executor.connect(self.targets[node.hostname])

    def connect_all(self, nodes: Sequence[SubNode]) -> Tuple[Dict[SubNode, object],
                                                             List[HostError]]:
        """Executors for the sub-nodes that could be reached, and the errors."""
        greenlets = {node: gevent.spawn(self._try, node) for node in nodes}
        gevent.joinall(list(greenlets.values()))
        made = {node: g.value for node, g in greenlets.items()}
        failed = [v for v in made.values() if isinstance(v, HostError)]
        unique = list({str(err): err for err in failed}.values())
        return {n: v for n, v in made.items() if not isinstance(v, HostError)}, unique

    def _try(self, node: SubNode):
        try:
            return self.connect(node)
        except HostError as err:
            return err

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
                made = self._try(node)
                if isinstance(made, HostError):
                    if made.fatal:
                        return report(node, made)
                    break
                waiting.remove(node)
                report(node, made)
            delay = min(delay * 2, RETRY_MAX)


def _resolve_all(names: List[str], ssh_config: Optional[str]) -> Dict[str, object]:
    """`ssh -G` for every host name, a few at a time in threads."""
    if not names:
        return {}
    pool = ThreadPool(min(8, len(names)))
    try:
        return dict(zip(names, pool.map(lambda n: sshconfig.resolve(n, ssh_config), names)))
    finally:
        pool.kill()


def close_all(executors) -> None:
    for ex in executors:
        ex.close()
