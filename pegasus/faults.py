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

A journal compaction (``journal.Journal.compact_if_large``) has its own
steps, ``COMPACT_STEPS``, reached only once a journal outgrows its limit
(``PEGASUS_JOURNAL_LIMIT``), so they are not in ``STEPS``:

- ``compact-started``: the new file is created and locked, still empty
- ``compact-written``: it holds the live tickets' lines, fsynced; not renamed
- ``compact-renamed``: it replaced the journal, folder fsynced; the old file's
  descriptor not closed yet

A job with ``retries:`` passes two more between its attempts,
``RETRY_STEPS``:

- ``retry-journaled``: a failed attempt's end and the ``retry`` record are
  journaled; the next attempt is not launched
- ``retry-launch-journaled``: the next attempt's launch is journaled; its
  command was not sent
"""

from __future__ import annotations

import os

EXIT_STATUS = 86
STEPS = ("taken-journaled", "queue-rewritten", "consumed-appended", "launch-journaled",
         "exec-sent", "job-finished", "finish-journaled")
COMPACT_STEPS = ("compact-started", "compact-written", "compact-renamed")
RETRY_STEPS = ("retry-journaled", "retry-launch-journaled")


def point(step: str) -> None:
    if os.environ.get("PEGASUS_FAULT") == step:
        os._exit(EXIT_STATUS)
