"""Fault injection for crash tests: exit at once after a named step.

``PEGASUS_FAULT=<step>`` makes Pegasus exit immediately (``os._exit``, no
clean-up, as if killed) the first time it passes that step. The steps, in
the order a job passes them:

- ``taken-journaled``: the journal says the job was taken (and, in queue mode,
  launched on the sub-node it was taken for); queue not rewritten
- ``queue-rewritten``: queue.yaml no longer has it; consumed.yaml not written
- ``consumed-appended``: consumed.yaml has it; not launched yet
- ``launch-journaled``: the journal says launched (broadcast mode writes it
  here); the command was not sent
- ``exec-sent``: the command was sent (or the local process started)
- ``job-finished``: the command finished; its end is not journaled yet
- ``finish-journaled``: the journal has its exit status
"""

from __future__ import annotations

import os

EXIT_STATUS = 86
STEPS = ("taken-journaled", "queue-rewritten", "consumed-appended", "launch-journaled",
         "exec-sent", "job-finished", "finish-journaled")


def point(step: str) -> None:
    if os.environ.get("PEGASUS_FAULT") == step:
        os._exit(EXIT_STATUS)
