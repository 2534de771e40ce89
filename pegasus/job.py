"""Run one job on one sub-node: render, frame, stream lines, make a Result.

``launching()`` is called just before the command is sent (the loop records
the launch there); a job that could not be sent or whose connection died
comes back as a Result with that outcome, for the loop to act on.
"""

from __future__ import annotations

from typing import Callable

from pegasus import expand, faults
from pegasus.errors import TemplateError
from pegasus.executor import ConnectionLost, NotStarted, Orphaned
from pegasus.joblogs import NoLog
from pegasus.model import Job, Outcome, Result, SubNode
from pegasus.lines import LineSplitter, ProgressFilter
from pegasus.output import Sink

NO_LOG = NoLog()


def run_job(node: SubNode, job: Job, executor, sink: Sink,
            launching: Callable[[], None], log=NO_LOG,
            verdict: Callable[[Result], Result] = lambda result: result) -> Result:
    """``log``: the job's log (``joblogs.JobLog``): gets every chunk of output, raw.
    ``verdict`` may restate the result before it is printed (a timeout)."""
    try:
        rendered = expand.render(job, node)
    except TemplateError as err:  # checked before it left the queue; kept safe
        return Result(node, job, job.command, error=f"not rendered: {err}")
    sink.job_started(node, rendered, job.id, job.attempt)
    splitters = {"stdout": LineSplitter(), "stderr": LineSplitter()}
    progress = {name: ProgressFilter(sink.progress_every) for name in ("stdout", "stderr")}

    def emit(stream: str, data: bytes) -> None:
        log.write(data)
        splitter = splitters[stream]
        block = splitter.feed_block(data)  # whole lines, no per-line work
        if block is not None:
            if block:
                progress[stream].line_ended()
                sink.block(node, stream, block)
            return
        lines = progress[stream].pick(splitter.feed(data), splitter.cr_ended)
        if lines:
            sink.lines(node, stream, lines)

    result = verdict(_execute(node, job, rendered, executor, emit, launching))
    for stream, splitter in splitters.items():
        rest = progress[stream].pick(splitter.close(), None) or progress[stream].close()
        if rest:
            sink.lines(node, stream, rest)
    sink.job_done(node, result)
    return result


def _execute(node, job, rendered, executor, emit, launching) -> Result:
    try:
        status = executor.run(rendered, emit, launching, (node, job))
    except NotStarted as err:
        return Result(node, job, rendered, error=f"not started ({err})",
                      outcome_hint=Outcome.NOT_STARTED)
    except Orphaned as err:
        return Result(node, job, rendered, error=str(err), outcome_hint=Outcome.ORPHANED)
    except ConnectionLost as err:
        return Result(node, job, rendered, error=f"connection lost, outcome unknown ({err})",
                      outcome_hint=Outcome.LOST)
    faults.point("job-finished")
    return Result(node, job, rendered, exit_status=status)
