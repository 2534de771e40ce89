"""Retries (``retries:``, ``retry_on:``, ``retry_lost:``; ``--retries``, ``--retry-lost``).

Pure: ``Defaults`` are the command line's (``options.RetryDefaults``),
``settings`` reads a job's own (they win), ``check`` refuses bad values before
a job is taken, ``wants`` says whether a result runs again, and ``Pending``
keeps the jobs waiting for their next attempt, each placed on a sub-node
where it has not failed when one is free. ``running.Retries`` and the loop
(``modes``) act; ``records`` journals each attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, FrozenSet, List, Optional, Tuple

from pegasus.errors import InputError
from pegasus.model import Job, Outcome, Result, SubNode
from pegasus.options import RetryDefaults as Defaults

SETTINGS = ("retries", "retry_on", "retry_lost")  # reserved keys of a queue entry
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass(frozen=True)
class Settings:
    retries: int = 0  # runs again up to this many times
    retry_on: Optional[FrozenSet[int]] = None  # only these exit statuses; None: any failure
    retry_lost: bool = False  # a job lost with its host runs again (at-least-once)


def check(job: Job) -> None:
    """InputError, in words, for a bad ``retries``, ``retry_on`` or ``retry_lost``."""
    params = dict(job.params)
    if not any(name in params for name in SETTINGS):
        return
    _retries(params.get("retries"))
    _retry_on(params.get("retry_on"))
    _flag(params.get("retry_lost"))


def settings(job: Job, defaults: Defaults) -> Settings:
    """The job's own settings (checked before it was taken), else the defaults."""
    params = dict(job.params)
    retries = _retries(params.get("retries"))
    lost = _flag(params.get("retry_lost"))
    return Settings(defaults.retries if retries is None else retries,
                    _retry_on(params.get("retry_on")),
                    defaults.retry_lost if lost is None else lost)


def wants(result: Result, defaults: Defaults) -> bool:
    """Whether this attempt's result runs the job again (attempts are left, and it
    failed, timed out, or, with ``retry_lost``, was lost with its host)."""
    job, outcome = result.job, result.outcome
    if outcome in (Outcome.SUCCEEDED, Outcome.NOT_STARTED, Outcome.ERROR,
                   Outcome.CANNOT_START):
        return False
    own = settings(job, defaults)
    if job.attempt > own.retries:
        return False
    if outcome in (Outcome.LOST, Outcome.ORPHANED):
        return own.retry_lost
    return own.retry_on is None or result.exit_status in own.retry_on


def next_attempt(result: Result) -> Job:
    """The job again, one attempt on, remembering the sub-node it failed on."""
    job = result.job
    return replace(job, attempt=job.attempt + 1, failed_on=job.failed_on | {result.node})


def left_entry(job: Job, defaults: Defaults) -> dict:
    """The canonical entry of a job waiting for attempt N, with the retries it
    has left: what goes back to the queue if it cannot run now (a stop, a crash)."""
    entry = job.canonical()
    entry["retries"] = str(settings(job, defaults).retries - job.attempt + 1)
    return entry


def retrying_words(result: Result, defaults: Defaults) -> str:
    job = result.job
    total = settings(job, defaults).retries + 1
    return (f"job #{job.id} {result.describe()} on {result.node.label}; it runs again "
            f"(attempt {job.attempt + 1} of {total})")


class Pending:
    """Jobs waiting for their next attempt, in the order they failed."""

    def __init__(self):
        self.jobs: List[Job] = []

    def __bool__(self) -> bool:
        return bool(self.jobs)

    def add(self, job: Job) -> None:
        self.jobs.append(job)

    def place(self, place: Callable[[Job, FrozenSet[SubNode]], Optional[SubNode]]
              ) -> List[Tuple[SubNode, Job]]:
        """Each waiting job on the sub-node ``place(job, avoid)`` gives it (one
        where it has not failed, if free), in order; the first with none waits,
        and the jobs after it."""
        started = []
        while self.jobs:
            node = place(self.jobs[0], self.jobs[0].failed_on)
            if node is None:
                break
            started.append((node, self.jobs.pop(0)))
        return started

    def take_all(self) -> List[Job]:
        jobs, self.jobs = self.jobs, []
        return jobs


def _retries(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    if not text.strip().isdigit():
        raise InputError(f"'retries: {text}' is not a whole number of 0 or more; give "
                         "how many more times a failed job runs, e.g. 'retries: 2'")
    return int(text)


def _retry_on(text: Optional[str]) -> Optional[FrozenSet[int]]:
    if text is None:
        return None
    codes = [part.strip() for part in text.split(",")]
    if not all(code.isdigit() and int(code) <= 255 for code in codes):
        raise InputError(f"'retry_on: {text}' is not a list of exit statuses; give "
                         "numbers from 1 to 255, e.g. 'retry_on: [137, 75]'")
    if any(int(code) == 0 for code in codes):
        raise InputError(f"'retry_on: {text}' lists exit status 0, which is success and "
                         "never retried; give the failures to retry, from 1 to 255")
    return frozenset(int(code) for code in codes)


def _flag(text: Optional[str]) -> Optional[bool]:
    if text is None:
        return None
    if text.strip().lower() not in _TRUE + _FALSE:
        raise InputError(f"'retry_lost: {text}' is neither true nor false; give "
                         "'retry_lost: true' or remove it")
    return text.strip().lower() in _TRUE
