"""Run one job on one sub-node: render, frame, stream lines, make a Result."""

from __future__ import annotations

from pegasus import expand
from pegasus.errors import TemplateError
from pegasus.executor import ConnectionLost
from pegasus.model import Job, Result, SubNode
from pegasus.output import LineSplitter, Sink


def run_job(node: SubNode, job: Job, executor, sink: Sink) -> Result:
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

    result = _execute(node, job, rendered, executor, emit)
    for stream, splitter in splitters.items():
        rest = splitter.close()
        if rest:
            sink.lines(node, stream, rest)
    sink.job_done(node, result)
    return result


def _execute(node, job, rendered, executor, emit) -> Result:
    try:
        status = executor.run(rendered, emit)
    except ConnectionLost as err:
        return Result(node, job, rendered,
                      error=f"connection lost, outcome unknown ({err})")
    except OSError as err:
        return Result(node, job, rendered, error=f"could not start: {err.strerror}")
    return Result(node, job, rendered, exit_status=status)
