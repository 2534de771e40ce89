"""Run one job on one sub-node: render, frame, stream lines, make a Result.

The journal hears of the job just before its command is sent (``launched``,
unless the take already said so) and when it ends (``finished``); a job that
could not be sent or whose
connection died comes back as a Result the loop acts on.
"""

from __future__ import annotations

from pegasus import expand, faults
from pegasus.errors import TemplateError
from pegasus.executor import ConnectionLost, NotStarted
from pegasus.model import Job, Outcome, Result, SubNode
from pegasus.output import LineSplitter, Sink


def run_job(node: SubNode, job: Job, executor, sink: Sink, journal=None,
            launch_journaled: bool = False) -> Result:
    try:
        rendered = expand.render(job, node)
    except TemplateError as err:  # checked before it left the queue; kept safe
        return Result(node, job, job.command, error=f"not rendered: {err}")
    sink.job_started(node, rendered)
    splitters = {"stdout": LineSplitter(), "stderr": LineSplitter()}

    def emit(stream: str, data: bytes) -> None:
        lines = splitters[stream].feed(data)
        if lines:
            sink.lines(node, stream, lines)

    def launching() -> None:
        if journal is not None and job.ticket is not None and not launch_journaled:
            journal.launched(job.ticket, node.label)
        faults.point("launch-journaled")

    result = _execute(node, job, rendered, executor, emit, launching)
    for stream, splitter in splitters.items():
        rest = splitter.close()
        if rest:
            sink.lines(node, stream, rest)
    _journal_end(journal, result, compact=launch_journaled)
    sink.job_done(node, result)
    return result


def _execute(node, job, rendered, executor, emit, launching) -> Result:
    try:
        status = executor.run(rendered, emit, launching)
    except NotStarted as err:
        return Result(node, job, rendered, error=f"not started ({err}); put back in the queue",
                      outcome_hint=Outcome.NOT_STARTED)
    except ConnectionLost as err:
        return Result(node, job, rendered, error=f"connection lost, outcome unknown ({err})",
                      outcome_hint=Outcome.LOST)
    faults.point("job-finished")
    return Result(node, job, rendered, exit_status=status)


def _journal_end(journal, result: Result, compact: bool = False) -> None:
    if journal is None or result.job.ticket is None or result.exit_status is None:
        return
    journal.finished(result.job.ticket, result.node.label, result.exit_status)
    faults.point("finish-journaled")
    if compact:  # queue mode: finished() settled the ticket (broadcast: Journal.settled)
        journal.compact_if_large()
