"""``--dry-run``: what a run would run and where; it connects to nothing, runs
nothing and changes no file.

Both files are read and checked as a real run checks them (the same messages
and exit status for bad input), but without the queue lock and without the
job records (``records.open_run``): no lock file, journal, ``consumed.yaml``
or temporary file is created, and nothing is taken. Each job is printed
rendered, as ``sh -c`` would get it, under the label of the sub-node (and
slots) it would go to.

Where jobs go, in queue mode: in waves, as if every sub-node were free. The
first wave is the scheduler's own plan on an idle run (``scheduler.Plan``:
spread over hosts, or with ``slots`` packed onto the first host in hosts.yaml
order that can allocate). The first job that finds no place starts the next
wave, placed as if every job before it had finished. A real run starts a job
as soon as any sub-node frees up, so from the second wave on the places show
how the jobs fit, not where they will run.

``{{job_id}}`` renders the id each job would get if a run started now (the
next free id of ``.queue.yaml.job-id``, read, not reserved); a run that takes
jobs first, or a dead run's recovery, moves it on.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence, Tuple

from pegasus import checks, expand, jobids
from pegasus.errors import ExitStatus, InputError
from pegasus.model import Job, SubNode
from pegasus.options import Options
from pegasus.output import Sink
from pegasus.queuefile import QueueFile, checked_entries
from pegasus.scheduler import Scheduler
from pegasus.words import plural


class Waves:
    """Queue mode's places: the scheduler's plan for an idle run, wave after wave."""

    def __init__(self, nodes: Sequence[SubNode]):
        self.nodes = list(nodes)
        self.count = 0
        self._next()

    def _next(self) -> None:
        self.plan = Scheduler(self.nodes).plan()
        self.count += 1

    def place(self, job: Job) -> SubNode:
        node = self.plan.place(job)
        if node is None:  # every sub-node (or slot) of this wave is given out
            self._next()
            node = self.plan.place(job)
        if node is None:  # cannot be: the check refuses a job no host can run
            raise InputError(f"no sub-node can run '{job.command}'")
        return node


def run(opts: Options, sink: Sink) -> ExitStatus:
    broadcasting = opts.mode == "b"
    nodes = checks.sub_nodes(opts)
    queue = QueueFile(opts.queue_file)
    check = expand.checker(nodes)
    counts = checks.check_queue(queue, check, sink, opts.daemon, lock=False)
    entries = jobs = shown = 0
    waves = None if broadcasting else Waves(nodes)
    first_id = jobids.peek(queue.path)
    # Checked whole: not again (the check is the costly part); a daemon's bad
    # entry must still end the jobs shown.
    for entries, job in _jobs(queue, check if counts is None else _checked_already):
        jobs += 1
        places = nodes if waves is None else [waves.place(job)]  # the waves count them all
        if opts.shown is not None and shown >= opts.shown:
            continue  # counted and placed, not printed
        shown += 1
        job = dataclasses.replace(job, id=first_id + jobs - 1)
        for node in places:
            sink.command(node, expand.render(job, node))
    sink.message(_totals(queue.path, entries, jobs, shown, len(nodes), waves))
    return ExitStatus.OK


def _checked_already(job: Job) -> None:
    """The check of a queue that ``check_queue`` found good as a whole."""


def _jobs(queue: QueueFile, check) -> Iterator[Tuple[int, Job]]:
    """(entry number, job) in queue order; a daemon's bad entry ends them (it was
    reported by the check: a daemon runs the entries before it, then waits)."""
    number = 0
    try:
        for number, expanded in enumerate(checked_entries(queue, check), 1):
            for job in expanded:
                yield number, job
    except InputError:
        return


def _totals(path: str, entries: int, jobs: int, shown: int, nodes: int,
            waves: Optional[Waves]) -> str:
    words = (f"dry run: {plural(jobs, 'job')} from {plural(entries, 'entry', 'entries')} of {path}, "
             f"{plural(nodes, 'sub-node')}")
    if waves is None:
        words += f": {plural(jobs * nodes, 'command')} in all (each job on every sub-node)"
    elif jobs:
        words += f"; placed in {plural(waves.count, 'wave')} as if every sub-node were free"
    if shown < jobs:
        words += f"; {shown} printed (-n {shown}), {jobs - shown} not"
    return words + "; nothing was run, connected to or changed"
