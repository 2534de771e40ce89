"""A job's cancel hook (``cancel:`` in its queue entry or on its host in hosts.yaml).

When Pegasus ends a job (a second Ctrl-c or SIGTERM, ``--halt now``, a
timeout: every caller of ``running.Jobs.stop``), it first runs the hook on the
job's sub-node, for the processes that signals to the job's process group do
not reach (``docker exec``'s, which belong to the container). The hook is
bounded (``executor.HOOK_TIMEOUT``); whatever it does, the usual TERM and KILL
follow, and its failure is said, never hidden.
"""

from __future__ import annotations

from typing import Optional

import gevent

from pegasus import expand
from pegasus.errors import TemplateError
from pegasus.executor import HOOK_TIMEOUT
from pegasus.model import Job, SubNode
from pegasus.output import Sink, one_line


class Hook:
    """The rendered hook of one job on one sub-node (``text`` None: it did not render)."""

    def __init__(self, node: SubNode, job: Job, text: Optional[str], sink: Sink,
                 error: str = ""):
        self.node, self.job, self.text, self.sink, self.error = node, job, text, sink, error

    @classmethod
    def of(cls, job: Job, node: SubNode, sink: Sink) -> Optional["Hook"]:
        """The job's hook on ``node``, or None when neither its entry nor its host has one."""
        try:
            text = expand.render_cancel(job, node)
        except TemplateError as err:
            return cls(node, job, None, sink, f"could not be rendered: {err}")
        return None if text is None else cls(node, job, text, sink)

    def run(self, executor) -> None:
        """Run it (at most ``HOOK_TIMEOUT`` s); say how it failed if it did. Never raises."""
        try:
            if self.text is None:
                return self._say(self.error)
            self.sink.message(f"{self._name()}: running '{one_line(self.text)}'")
            timer = gevent.Timeout(HOOK_TIMEOUT)
            timer.start()
            try:
                status, output = executor.run_aside(self.text)
            except gevent.Timeout as err:
                if err is not timer:
                    raise
                return self._say(f"no answer after {HOOK_TIMEOUT} s")
            finally:
                timer.close()
            if status != 0:
                self._say(f"failed (exit {status})" + _last_line(output))
        except Exception as err:  # noqa: BLE001 - a lost host, a bug: said, and TERM follows
            self._say(f"could not run: {err}")
        return None

    def _name(self) -> str:
        number = "" if self.job.id is None else f" of job #{self.job.id}"
        return f"{self.node.label} cancel hook{number}"

    def _say(self, what: str) -> None:
        self.sink.message(f"{self._name()} {what}; the job is stopped as usual (TERM, "
                          "then KILL)")


def _last_line(output: bytes) -> str:
    lines = output.decode("utf-8", "replace").strip().splitlines()
    return f": {one_line(lines[-1])}" if lines else ""
