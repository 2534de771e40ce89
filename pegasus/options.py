"""The options of one Pegasus run, as parsed from the command line (``cli``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Tuple

from pegasus.halt import Policy
from pegasus.selection import Selection

ORPHAN_TIMEOUT = 600  # seconds: --orphan-timeout's default (10m)
# Shortest --orphan-timeout: at 10 s, heartbeats go out every second (ssh.py's
# beat_every, the loop's executor.HEARTBEAT), so the node's watchdog (ticking
# every 5 s, wrapper.py) hears ten of them per period; at 1 s it fired between two.
MIN_ORPHAN_TIMEOUT = 10
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class RetryDefaults:
    """``--retries N`` and ``--retry-lost``: for jobs that do not say (``retry``)."""

    retries: int = 0
    retry_lost: bool = False


@dataclass(frozen=True)
class Options:
    mode: str  # "q", "b", "l", "requeue", "log", "status", "stop" or "kill"
    daemon: bool
    error_aborts: bool
    editor: Optional[str]
    print_period: int
    queue_file: str
    hosts_file: str
    ssh_config: Optional[str]
    orphan_timeout: int = ORPHAN_TIMEOUT  # seconds
    timeout: Optional[float] = None  # --timeout: seconds a job may run (its own wins)
    halt: Optional[Policy] = None  # --halt (None: never)
    failed: bool = False  # requeue --failed: failed.yaml's jobs, not interrupted.yaml's
    dry_run: bool = False  # --dry-run: print what would run (requeue: move), do nothing
    shown: Optional[int] = None  # -n N: a dry run prints at most N jobs
    log_dir: Optional[str] = None  # the job logs' folder; None: --no-logs
    job_id: Optional[int] = None  # pegasus log ID
    follow: bool = False  # pegasus log -f
    json: bool = False  # pegasus status --json
    now: bool = False  # pegasus stop --now
    job_ids: Tuple[int, ...] = ()  # pegasus kill ID...
    retries: RetryDefaults = RetryDefaults()  # --retries, --retry-lost
    fold: bool = False  # --fold: a step's identical outputs printed once (queue: the summary)
    selection: Selection = Selection()  # --limit, --exclude
    skip_unreachable: bool = False  # broadcast: --skip-unreachable


def parse_duration(text: str) -> Optional[float]:
    """``90``, ``90s``, ``30m``, ``1.5h``, ``1d`` in seconds (a unit may follow a
    space and be in capitals); None if not a duration."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        return None
    return float(match.group(1)) * _UNIT[match.group(2) or "s"]


def format_duration(seconds: float) -> str:
    """Seconds in the largest unit that keeps them whole: ``90s``, ``30m``, ``2h``."""
    for unit in ("d", "h", "m"):
        if seconds >= _UNIT[unit] and seconds % _UNIT[unit] == 0:
            return f"{seconds / _UNIT[unit]:g}{unit}"
    return f"{seconds:g}s"
