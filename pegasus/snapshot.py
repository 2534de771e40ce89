"""What ``pegasus status`` shows of a running Pegasus, read from its loop as
it is now (nothing is changed, nothing waited for): the running jobs, this
run's counts and the sub-nodes' states, as plain JSON values (README: "pegasus
status --json")."""

from __future__ import annotations

import os
import time
from typing import Dict, List, Tuple

from pegasus import expand
from pegasus.errors import PegasusError


class NodeStates:
    """Each sub-node's state (up, down, reconnecting) and since when it holds,
    as seen at each ``look`` (``controlserver`` looks every second)."""

    def __init__(self):
        self.started = time.time()
        self.seen: Dict[object, Tuple[str, float]] = {}
        self.looked = False  # a sub-node first seen at a later look was added since

    def look(self, loop) -> List[Dict]:
        now, rows = time.time(), []
        first, self.looked = not self.looked, True
        for node in loop.hosts.nodes:
            state = node_state(loop, node)
            old = self.seen.get(node)
            if old is None or old[0] != state:
                since = self.started if old is None and first else now
                old = self.seen[node] = (state, since)
            rows.append({"name": node.label, "host": node.hostname, "state": state,
                         "since": round(old[1], 3)})
        return rows


def node_state(loop, node) -> str:
    if not loop.scheduler.is_down(node):
        return "up"
    return "reconnecting" if node.hostname in loop.hosts.reconnecting else "down"


def status(loop, states: NodeStates) -> Dict:
    now = time.time()
    counts = loop.counts()
    return {
        "pid": os.getpid(),
        "queue": os.path.realpath(loop.run.queue.path),
        "started": round(states.started, 3),
        "mode": "broadcast" if counts.steps else "queue",
        "daemon": loop.run.daemon,
        "state": loop.state.name.lower(),
        "blocked": None if loop.head.blocked is None else str(loop.head.blocked),
        "running": [running_job(node, started.job, started.at, now)
                    for node, started in sorted(loop.jobs.running.items(),
                                                key=lambda item: item[1].at)],
        "run": {"done": counts.done, "running": counts.running, "failed": counts.failed},
        "nodes": states.look(loop),
    }


def running_job(node, job, started: float, now: float) -> Dict:
    try:
        command = expand.render(job, node)
    except PegasusError:
        command = job.command
    return {"id": job.id, "node": node.label,
            "slots": list(node.slots) if node.slot_count else [],
            "started": round(started, 3), "elapsed": round(now - started, 3),
            "command": command}
