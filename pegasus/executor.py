"""The executor interface the run loop uses, and the names its executors share.

An executor runs one rendered command at a time on one sub-node (``Executor``).
Three implement it and differ only in how: ``pegasus.local.LocalExecutor`` runs
``sh -c`` as a local process in its own session; ``pegasus.slurm.SlurmExecutor``
runs it as an ``srun`` job step (its options from the job); ``pegasus.ssh.SshExecutor``
(opened by ``pegasus.ssh.connect``) runs it as a channel of one SSH connection,
under the remote wrapper (``pegasus/wrapper.sh``), whose watchdog stops the
job's process group when the channel's stdin ends or falls silent.

Executors block only the calling greenlet (parallel-ssh and gevent.subprocess
wait cooperatively); they spawn nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Protocol, Tuple, runtime_checkable

if TYPE_CHECKING:
    from pegasus.model import Job, SubNode

Emit = Callable[[str, bytes], None]  # emit(stream name, raw bytes as they arrive)
Placed = Tuple["SubNode", "Job"]  # a job and the sub-node it runs on
CHUNK = 65536  # bytes read at once from a job's output

KILL_AFTER = 3  # seconds between TERM and KILL when a job is cancelled
HOOK_TIMEOUT = 10  # seconds a cancel hook may take before the job is stopped anyway
ASIDE_OUTPUT = 4096  # bytes of a command run aside (a cancel hook) kept for a message
HEARTBEAT = 1.0  # seconds between the loop's heartbeat calls (an executor may skip some)
ORPHAN_TIMEOUT = 600  # default seconds (options.ORPHAN_TIMEOUT) without a word from Pegasus before a remote job stops
NOT_RESPONDING = 30  # seconds without a packet from a host (keepalives want replies)
ORPHANED = 249  # the wrapper's status when its watchdog stopped the job for that silence


class NotStarted(Exception):
    """The command could not be sent: it did not run."""


class ConnectionLost(Exception):
    """The connection died while a job ran: its outcome is unknown."""


class Orphaned(Exception):
    """The node's watchdog stopped the job: it heard nothing from Pegasus for too long."""


def nothing() -> None:
    """The default ``launching`` callback."""


@runtime_checkable
class Executor(Protocol):
    """Runs one command at a time on one sub-node.

    What a run gives back: the exit status (128+N when signal N killed the
    job), or ``NotStarted`` (nothing ran: the job may be put back), or
    ``ConnectionLost`` (sent, outcome unknown). Output goes to ``emit`` only.
    """

    def run(self, command: str, emit: Emit, launching: Callable[[], None] = nothing,
            placed: Optional[Placed] = None) -> int:
        """Run ``sh -c command``; call ``launching()`` just before it is sent.
        ``placed``: the job it is and the sub-node it was placed on (its GPUs),
        for an executor whose way of running depends on them (Slurm's srun);
        None for a command that is no job (a probe)."""

    def heartbeat(self) -> None:
        """Tell a remote watchdog Pegasus is still there (every ``HEARTBEAT`` s)."""

    def cancel(self) -> None:
        """Ask the running command to stop: TERM to its group, KILL ``KILL_AFTER`` s later."""

    def kill(self) -> None:
        """KILL the group of a command still running ``KILL_AFTER`` s after ``cancel()``
        (a remote watchdog does that itself)."""

    def run_aside(self, command: str) -> Tuple[int, bytes]:
        """Run a short command beside the running job, on the same sub-node (a
        cancel hook): its exit status and the start of its output."""

    def silent_for(self) -> Optional[float]:
        """Seconds since the host last sent anything, or None where unknown."""

    def close(self) -> None:
        """Free the connection; never raises (nor waits long for a hung host)."""
