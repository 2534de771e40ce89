"""The values that flow through Pegasus: sub-nodes, jobs and results."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import FrozenSet, Mapping, Optional, Tuple

from pegasus.options import format_duration, parse_duration

Params = Tuple[Tuple[str, str], ...]  # sorted (name, value) pairs, values as typed


def params_of(mapping: Mapping[str, str]) -> Params:
    return tuple(sorted(mapping.items()))


# allocation_policy as typed -> as rendered (the original's spellings)
SPELLINGS = {"first_fit": "first_fit", "firstfit": "first_fit", "first-fit": "first_fit",
             "buddy": "buddy"}

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
GPU_BUSY_MIB = 1024  # hosts.yaml's default ``gpu_busy_mib``


@dataclass(frozen=True)
class GpuProbe:
    """A host's ``gpu_probe`` (the command that runs nvidia-smi there) and
    ``gpu_busy_mib`` (memory use above which a GPU is someone else's)."""

    command: str
    busy_mib: int = GPU_BUSY_MIB


@dataclass(frozen=True)
class Partition:
    """A hosts.yaml ``slurm:`` entry: jobs run as ``srun`` job steps on this
    partition, with the entry's ``options`` (shell words) (``docs/slurm.md``)."""

    name: str
    options: Tuple[str, ...] = ()


# what {{slots}} and {{hostname}} render to on Slurm: known only once srun placed the job
SLURM_SLOTS, SLURM_HOSTNAME = "${CUDA_VISIBLE_DEVICES-}", "${SLURMD_NODENAME-}"


@dataclass(frozen=True)
class SubNode:
    """One lane that runs one job at a time: a host plus its parameters.

    A host with ``slots: N`` in hosts.yaml has N lanes (``lane`` 0..N-1, one
    connection each) sharing its N slots; a job running on a lane holds the
    slots it was given (``slots``, not part of the sub-node's identity: the
    lane with a job's slots is the same lane). A host without ``slots`` is
    one lane with one slot, slot 0 (``slot_count`` 0: none declared).
    """

    index: int  # position in hosts.yaml order (lanes included)
    hostname: str  # rendered; an ssh_config alias or a local name
    params: Params = ()
    lane: int = 0
    slot_count: int = 0  # the host's ``slots``; 0 when hosts.yaml gives none
    slots: Tuple[int, ...] = field(default=(), compare=False)  # a running job's
    copy: int = 0  # the same host and params listed again: 1, 2, ... in file order
    probe: Optional[GpuProbe] = field(default=None, compare=False)  # a host setting
    cancel: Optional[str] = field(default=None, compare=False)  # the host's cancel hook
    slurm: Optional[Partition] = None  # a ``slurm:`` entry's lane
    gpus: int = field(default=0, compare=False)  # a running job's ``--gres=gpu:N`` (Slurm)

    @property
    def label(self) -> str:
        name = f"{self.hostname}#{self.copy}" if self.copy else self.hostname
        if self.slurm is not None:  # a slurm: entry's lanes, told apart
            name = f"{name}/{self.lane + 1}"
        inner = ",".join(f"{k}={v}" for k, v in self.params)
        name = f"{name} ({inner})" if inner else name
        if self.slot_count and self.slots:
            return f"[{name} slots {','.join(map(str, self.slots))}]"
        return f"[{name}]"

    @property
    def colour(self) -> int:
        """Lanes of one host share their first lane's colour."""
        return self.index - self.lane

    @property
    def is_local(self) -> bool:
        return self.hostname in LOCAL_HOSTS

    @property
    def total_slots(self) -> int:
        return self.slot_count or 1

    def context(self) -> dict:
        """Template names this sub-node defines (its params, hostname, slots, job_id)."""
        ctx = dict(self.params)
        ctx["hostname"] = self.hostname
        ctx["slots"] = ",".join(map(str, self.slots or (0,)))
        if self.slurm is not None:  # shell expansions: srun's step sets them
            ctx["hostname"], ctx["slots"] = SLURM_HOSTNAME, SLURM_SLOTS
        ctx["allocation_policy"] = "first_fit"  # the job's own, if any, wins
        ctx["job_id"] = ""  # always defined; the job's own id (Job.context_on)
        ctx["attempt"] = "1"  # always defined; the job's own attempt (Job.context_on)
        return ctx


@dataclass(frozen=True)
class Job:
    """One command template with the parameters of one cartesian point."""

    command: str  # the template, unrendered
    params: Params = ()
    line: Optional[int] = field(default=None, compare=False)  # of its entry, 1-based
    ticket: Optional[str] = field(default=None, compare=False)  # its journal id
    id: Optional[int] = field(default=None, compare=False)  # its job id (jobids), once taken
    attempt: int = field(default=1, compare=False)  # 2, 3, ...: a retry (``retry``)
    failed_on: FrozenSet["SubNode"] = field(default=frozenset(), compare=False)  # earlier attempts

    def context_on(self, node: SubNode) -> dict:
        """Job params, then the sub-node's (they win, with the job's slots)."""
        ctx = dict(self.params)
        policy = ctx.get("allocation_policy")
        ctx.update(node.context())
        if policy is not None:
            ctx["allocation_policy"] = SPELLINGS.get(policy, policy)
        if self.id is not None:
            ctx["job_id"] = str(self.id)
        ctx["attempt"] = str(self.attempt)
        return ctx

    @property
    def timeout(self) -> Optional[float]:
        """Its own ``timeout:`` in seconds (checked before it was taken), or None."""
        text = dict(self.params).get("timeout")
        return None if text is None else parse_duration(text)

    def canonical(self) -> dict:
        """A queue entry that re-runs exactly this job."""
        entry = {"command": self.command}
        entry.update(self.params)
        if "retry_on" in entry:  # one setting, typed as a list: kept as one
            entry["retry_on"] = [code.strip() for code in entry["retry_on"].split(",")]
        return entry


class Outcome(Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # ran and exited non-zero
    LOST = "lost"  # the connection died while it ran: outcome unknown
    ORPHANED = "orphaned"  # the node's watchdog stopped it: Pegasus was silent too long
    NOT_STARTED = "not started"  # never sent: put back in the queue
    TIMED_OUT = "timed out"  # stopped by Pegasus when its timeout ran out
    ERROR = "error"  # could not run: see Result.error
    CANNOT_START = "cannot start"  # never ran, and will not by being sent again


TIMED_OUT_STATUS = 124  # as timeout(1) and GNU parallel report a job that ran out of time

SIGNALS = {1: "HUP", 2: "INT", 3: "QUIT", 6: "ABRT", 9: "KILL", 11: "SEGV",
           13: "PIPE", 14: "ALRM", 15: "TERM"}


@dataclass(frozen=True)
class Result:
    node: SubNode
    job: Job
    rendered: str
    exit_status: Optional[int] = None
    error: Optional[str] = None
    outcome_hint: Optional[Outcome] = None  # LOST or NOT_STARTED, with error
    put_back: bool = False  # not started, and back in the queue: it runs later
    timed_out: Optional[float] = None  # the timeout (seconds) that stopped it
    retrying: bool = False  # this attempt failed and the job runs again (``retry``)
    killed: bool = False  # stopped by ``pegasus kill`` (it did not succeed first)

    @property
    def outcome(self) -> Outcome:
        if self.outcome_hint is not None:
            return self.outcome_hint
        if self.error is not None:
            return Outcome.ERROR
        if self.timed_out is not None:
            return Outcome.TIMED_OUT
        return Outcome.SUCCEEDED if self.exit_status == 0 else Outcome.FAILED

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCEEDED

    def describe(self) -> str:
        if self.error is not None:
            return self.error
        if self.timed_out is not None:
            return f"timed out after {format_duration(self.timed_out)}, exit {self.exit_status}"
        if self.killed:
            return f"killed by user, exit {self.exit_status}"
        signal = SIGNALS.get(self.exit_status - 128) if self.exit_status > 128 else None
        killed = f" (killed by SIG{signal})" if signal else ""
        return f"exit {self.exit_status}{killed}"
