"""Pure: a hosts.yaml ``slurm:`` entry read into lanes, and the ``srun`` command of a job.

An entry ``- slurm: PARTITION`` (with ``jobs: N``, ``options: "shell words"``)
is N lanes named ``slurm:PARTITION``: at most N jobs in flight on Slurm, each
one ``srun`` job step (``pegasus.slurm.SlurmExecutor`` runs it). Slurm
places the jobs and allocates their GPUs; Pegasus holds no slots for them.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import replace
from typing import List, Optional, Tuple

from pegasus import slots
from pegasus.errors import InputError
from pegasus.model import Job, Partition, SubNode

SETTINGS = ("slurm", "jobs", "options")
LANE = "slurm:"  # the host name of a partition's lanes: slurm:PARTITION
EXAMPLE = "for example:\n- slurm: gpu\n  jobs: 16\n  options: --qos=normal"
MAX_JOBS = 10_000  # lanes of one entry: more is surely a typo
MAX_GPUS = 1 << 20  # a job's GPUs on Slurm: Slurm refuses what it cannot give


def sub_nodes(entry: dict, first_index: int) -> List[SubNode]:
    """The lanes of a ``slurm:`` entry; InputError says what to change."""
    unknown = [name for name in entry if name not in SETTINGS]
    if unknown:
        hint = ("; Slurm allocates the GPUs: give jobs 'slots: N' in the queue instead"
                if "slots" in unknown else "")
        raise InputError(f"a 'slurm:' entry takes only {', '.join(SETTINGS)}, not "
                         f"'{unknown[0]}'{hint}; {EXAMPLE}")
    partition = Partition(_partition(entry["slurm"]), _options(entry.get("options")))
    count = _jobs(entry["jobs"]) if "jobs" in entry else 1
    name = f"{LANE}{partition.name}"
    return [SubNode(first_index + lane, name, (), lane, slurm=partition)
            for lane in range(count)]


def is_lane(label: str) -> bool:
    """Whether a sub-node's label (``[slurm:gpu/2]``) is a Slurm lane's."""
    return label.startswith("[" + LANE)


def _scalar(raw, name: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise InputError(f"'{name}' must be one plain value; {EXAMPLE}")
    return raw.strip()


def _partition(raw) -> str:
    name = _scalar(raw, "slurm")
    if name.startswith("-") or any(c.isspace() for c in name):
        raise InputError(f"'slurm: {name}' is not a partition name (one word, not "
                         f"starting with '-'); put srun options in 'options:'; {EXAMPLE}")
    return name


def _jobs(raw) -> int:
    text = _scalar(raw, "jobs")
    if not text.isdigit() or not 1 <= int(text) <= MAX_JOBS:
        raise InputError(f"'jobs: {text}' is not a number of jobs in flight; give a "
                         f"whole number from 1 to {MAX_JOBS}, e.g. 'jobs: 16'")
    return int(text)


def _options(raw) -> Tuple[str, ...]:
    if raw is None:
        return ()
    text = _scalar(raw, "options")
    try:
        words = shlex.split(text)
    except ValueError as err:
        raise InputError(f"'options: {text}' cannot be read as shell words ({err}); "
                         "close the quote, e.g. options: --comment='a b'") from None
    for before, word in zip([""] + words, words):
        if not word.startswith("-") and not _takes_a_value(before):
            raise InputError(f"'options: {text}': '{word}' is not an srun option (they "
                             "start with '-'; give the command in the queue, not here)")
    return tuple(words)


def _takes_a_value(word: str) -> bool:
    """Whether the next word may be this option's value (``--qos normal``,
    ``-A lab``): an option without a value of its own (``--qos=normal``, ``-c1``)."""
    if word.startswith("--"):
        return len(word) > 2 and "=" not in word
    return word.startswith("-") and len(word) == 2


def wants_several(job: Job) -> bool:
    """A job of more than one slot (GPU): hosts without ``slots`` cannot run it."""
    return _gpus(job) > 1


def placed(node: SubNode, job: Job) -> SubNode:
    """A Slurm lane carrying the job's GPU request (``gpus``; Slurm picks the GPUs:
    the lane holds no slots)."""
    return replace(node, gpus=_gpus(job))


def _gpus(job: Job) -> int:
    """The job's ``slots: N`` (0 without: no ``--gres`` on Slurm)."""
    value = dict(job.params).get("slots")
    return 0 if value is None else slots.count_of(value)


def time_limit(seconds: float) -> str:
    """srun's ``--time`` in whole minutes (Slurm's unit), rounded up: Pegasus's own
    timeout, exact, comes first."""
    return str(max(1, math.ceil(seconds / 60)))


def srun_argv(partition: Partition, job_name: str, gpu_count: int,
              timeout: Optional[float], command: str, comment: str = "") -> List[str]:
    """``srun`` running ``sh -c command`` as one job step: the entry's options after
    Pegasus's own, the job's GPUs and time limit last (the job's own settings win).
    ``comment``: which queue and job it is (``step_comment``), for a later start."""
    argv = ["srun", f"--partition={partition.name}", f"--job-name={job_name}",
            "--ntasks=1", *([f"--comment={comment}"] if comment else []), *partition.options]
    if gpu_count:
        argv.append(f"--gres=gpu:{gpu_count}")
    if timeout is not None:
        argv.append(f"--time={time_limit(timeout)}")
    return argv + ["sh", "-c", command]


def step_comment(queue_key: str, job_id: int) -> str:
    """A step's ``--comment``: this queue (``control.key``) and the job's id. Job names
    (ids) alone are not unique: another queue's Pegasus numbers its jobs too."""
    return f"pegasus:{queue_key}:{job_id}"


def job_name(job: Job) -> str:
    """``--job-name``: the job's id (``pegasus`` for a job without one: a dry run's)."""
    return "pegasus" if job.id is None else str(job.id)
