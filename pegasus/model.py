"""The values that flow through Pegasus: sub-nodes, jobs and results."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping, Optional, Tuple

Params = Tuple[Tuple[str, str], ...]  # sorted (name, value) pairs, values as typed


def params_of(mapping: Mapping[str, str]) -> Params:
    return tuple(sorted(mapping.items()))


LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class SubNode:
    """One slot that runs one job at a time: a host plus its parameters."""

    index: int  # position in hosts.yaml order, also picks the colour
    hostname: str  # rendered; an ssh_config alias or a local name
    params: Params = ()

    @property
    def label(self) -> str:
        if not self.params:
            return f"[{self.hostname}]"
        inner = ",".join(f"{k}={v}" for k, v in self.params)
        return f"[{self.hostname} ({inner})]"

    @property
    def is_local(self) -> bool:
        return self.hostname in LOCAL_HOSTS

    def context(self) -> dict:
        """Template names this sub-node defines (its params and hostname)."""
        ctx = dict(self.params)
        ctx["hostname"] = self.hostname
        return ctx


@dataclass(frozen=True)
class Job:
    """One command template with the parameters of one cartesian point."""

    command: str  # the template, unrendered
    params: Params = ()
    line: Optional[int] = None  # 1-based line of its queue entry, for messages

    def context_on(self, node: SubNode) -> dict:
        """Job params, then the sub-node's (they win), then hostname."""
        ctx = dict(self.params)
        ctx.update(node.context())
        return ctx

    def canonical(self) -> dict:
        """A queue entry that re-runs exactly this job."""
        entry = {"command": self.command}
        entry.update(self.params)
        return entry


class Outcome(Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # ran and exited non-zero
    ERROR = "error"  # could not run or lost: see Result.error


@dataclass(frozen=True)
class Result:
    node: SubNode
    job: Job
    rendered: str
    exit_status: Optional[int] = None
    error: Optional[str] = None

    @property
    def outcome(self) -> Outcome:
        if self.error is not None:
            return Outcome.ERROR
        return Outcome.SUCCEEDED if self.exit_status == 0 else Outcome.FAILED

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCEEDED

    def describe(self) -> str:
        return self.error if self.error is not None else f"exit {self.exit_status}"
