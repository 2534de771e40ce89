"""What happens to a run, as small values put on the loop's one event queue."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable, Optional, Tuple

from pegasus.errors import ExitStatus, HostError, InputError
from pegasus.gpuprobe import Reading
from pegasus.model import Result, SubNode


@dataclass(frozen=True)
class JobDone:
    """A job ended on its sub-node (ran, failed, was lost or never sent)."""

    result: Result


@dataclass(frozen=True)
class HostBack:
    """A lost sub-node has a new connection."""

    node: SubNode
    executor: object


@dataclass(frozen=True)
class HostFailed:
    """A sub-node's first connection failed; it will be tried again."""

    node: SubNode
    error: HostError


@dataclass(frozen=True)
class HostRefused:
    """A lost host refuses us for good (changed host key, login refused)."""

    node: SubNode
    error: HostError


@dataclass(frozen=True)
class HostSilent:
    """A host has sent nothing, not even a keepalive reply, for ``seconds``."""

    hostname: str
    seconds: float


@dataclass(frozen=True)
class HostsChanged:
    """hosts.yaml changed and is at rest (a daemon, ``hostswatch``): the sub-nodes
    added and removed, or why the file is bad (``error``)."""

    path: str
    added: Tuple[SubNode, ...] = ()
    removed: Tuple[SubNode, ...] = ()
    error: Optional[InputError] = None


class Signal(Enum):
    CTRL_C = ExitStatus.INTERRUPTED
    SIGTERM = ExitStatus.TERMINATED


@dataclass(frozen=True)
class Signalled:
    signal: Signal
    by: str = "Ctrl-c"  # who asked, in words: "pegasus stop" from another terminal
    now: bool = False  # ``pegasus stop --now``: the first Ctrl-c and the second at once


@dataclass(frozen=True)
class OutputLost:
    """Pegasus's standard output cannot be written (closed pipe, full disk)."""

    error: OSError


@dataclass(frozen=True)
class ProbeDone:
    """A GPU probe of ``node``'s host ended: a reading, or why it failed
    (``lost``: the lane's connection failed)."""

    node: SubNode
    reading: Optional[Reading]
    failure: Optional[str] = None
    lost: bool = False


@dataclass(frozen=True)
class ProbeDue:
    """Time to probe ``node``'s host again, if the queue's head still waits."""

    node: SubNode


@dataclass(frozen=True)
class Request:
    """``pegasus kill`` from another terminal (``controlserver``): ``act(loop)``
    runs in the loop, between two of its steps, and answers the requester."""

    act: Callable[[object], None]
