"""Jobs of ``slurm:`` entries as ``srun`` job steps run from this machine.

``Partitions`` checks a partition once (``scontrol show partition``) before
its lanes take jobs; ``SlurmExecutor`` runs each job as ``srun ... sh -c
command`` (``slurmentry.srun_argv``) in a session of its own, its output
streamed back as a local job's is. srun gets SIGTERM when Pegasus dies
(PR_SET_PDEATHSIG, even after ``kill -9``), and srun answers SIGTERM by
cancelling its step: no Slurm job outlives Pegasus. Cancelling a job is the
same SIGTERM; srun is never sent SIGKILL (its step would run on without it).
"""

from __future__ import annotations

import errno
import os
import signal
from typing import Callable, Dict, List, Optional, Tuple

from gevent import subprocess
from gevent.lock import BoundedSemaphore

from pegasus import parentdeath, slurmentry
from pegasus.errors import SlurmError
from pegasus.executor import Emit, Placed, nothing
from pegasus.local import LocalExecutor, run_to_end
from pegasus.model import Job, Partition, SubNode

CHECK_TIMEOUT = 30  # seconds for ``scontrol show partition`` to answer
NOT_FOUND = 127  # as a shell says of a command it cannot find


class Partitions:
    """Executors for Slurm lanes, each partition checked once (a failure is kept)."""

    def __init__(self, queue_key: str = ""):
        self.queue_key = queue_key  # control.key of the queue (each step's comment)
        self.checked: Dict[str, Optional[SlurmError]] = {}
        self.locks: Dict[str, BoundedSemaphore] = {}

    def executor(self, node: SubNode) -> "SlurmExecutor":
        """Raises SlurmError (Slurm's words) when the partition cannot take jobs."""
        partition = node.slurm
        with self.locks.setdefault(partition.name, BoundedSemaphore(1)):
            if partition.name not in self.checked:
                self.checked[partition.name] = _check(node.hostname, partition)
        error = self.checked[partition.name]
        if error is not None:
            raise error
        return SlurmExecutor(partition, self.queue_key)


def _check(host: str, partition: Partition) -> Optional[SlurmError]:
    argv = ["scontrol", "show", "partition", partition.name]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=CHECK_TIMEOUT)
    except FileNotFoundError:
        return SlurmError(host, "Slurm's commands are not on this machine's PATH "
                                "(scontrol not found); run Pegasus on a Slurm login node")
    except subprocess.TimeoutExpired:
        return SlurmError(host, f"Slurm did not answer 'scontrol show partition "
                                f"{partition.name}' in {CHECK_TIMEOUT} s")
    if done.returncode == 0:
        return None
    said = (done.stderr or done.stdout).decode(errors="replace").strip()
    hint = ("check the partition's name in the hosts file ('sinfo -s' lists them)"
            if "not found" in said else "check that 'sinfo' works on this machine")
    return SlurmError(host, f"Slurm says: {said}; {hint}")


def cancel_leftovers(queue_key: str, job_ids: List[int], say: Callable[[str], None]) -> None:
    """Jobs a dead Pegasus ran on Slurm whose step may outlive it (srun gone
    without cancelling it): found by their comment (this queue, their id) in
    ``squeue --me`` and cancelled, each said. Slurm not answering is said too."""
    wanted = {slurmentry.step_comment(queue_key, job_id): job_id for job_id in job_ids}
    try:
        listed = subprocess.run(["squeue", "--me", "--noheader", "--format=%i %k"],
                                stdin=subprocess.DEVNULL, capture_output=True,
                                timeout=CHECK_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as err:
        return say(f"could not ask Slurm whether the interrupted jobs still run ({err}); "
                   "'squeue --me' shows them, 'scancel -n ID' ends one")
    if listed.returncode != 0:
        said = listed.stderr.decode(errors="replace").strip()
        return say(f"could not ask Slurm whether the interrupted jobs still run (squeue: "
                   f"{said}); 'squeue --me' shows them, 'scancel -n ID' ends one")
    for line in listed.stdout.decode(errors="replace").splitlines():
        slurm_id, _, comment = line.strip().partition(" ")
        if comment in wanted:
            subprocess.run(["scancel", slurm_id], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=CHECK_TIMEOUT)
            say(f"job #{wanted[comment]} outlived the Pegasus that started it (Slurm job "
                f"{slurm_id}): cancelled")


class SlurmExecutor:
    """Runs one job at a time as an ``srun`` job step: its name, comment, GPUs
    and time limit from the job it is (``placed``)."""

    def __init__(self, partition: Partition, queue_key: str = ""):
        self.partition, self.queue_key = partition, queue_key
        self.proc = None
        self.aside = LocalExecutor()  # a cancel hook runs here, beside srun

    def _argv(self, command: str, placed: Optional[Placed]) -> list:
        node, job = placed or (None, Job(""))
        comment = slurmentry.step_comment(self.queue_key, job.id) \
            if self.queue_key and job.id is not None else ""
        return slurmentry.srun_argv(self.partition, slurmentry.job_name(job),
                                    node.gpus if node is not None else 0, job.timeout,
                                    command, comment)

    def run(self, command: str, emit: Emit, launching: Callable[[], None] = nothing,
            placed: Optional[Placed] = None) -> int:
        launching()
        try:
            self.proc = subprocess.Popen(self._argv(command, placed), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         start_new_session=True,  # Ctrl-c stays here
                                         preexec_fn=parentdeath.arm())
        except OSError as err:
            emit("stderr", _cannot_start(err))
            return NOT_FOUND if err.errno == errno.ENOENT else 126
        return run_to_end(self, emit)

    def heartbeat(self) -> None:
        """srun needs none."""

    def cancel(self) -> None:
        """srun cancels its step on SIGTERM (Slurm: TERM, KILL after KillWait)."""
        self._terminate()

    def kill(self) -> None:
        """TERM again, never KILL: a killed srun would leave its step running."""
        self._terminate()

    def _terminate(self) -> None:
        proc = self.proc
        if proc is not None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def run_aside(self, command: str) -> Tuple[int, bytes]:
        """A cancel hook: on this machine, as a local job's (it may call scancel)."""
        return self.aside.run_aside(command)

    def silent_for(self) -> None:
        return None

    def close(self) -> None:
        pass


def _cannot_start(err: OSError) -> bytes:
    if err.errno == errno.ENOENT:
        return (b"pegasus: srun not found on this machine's PATH; run Pegasus on a "
                b"Slurm login node\n")
    return f"pegasus: cannot start srun: {err.strerror}\n".encode()
