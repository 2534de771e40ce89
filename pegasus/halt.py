"""The halt policy (``--halt``, GNU parallel's syntax): when failures stop a run.

Pure: ``parse`` reads the option, ``Tally`` counts finished and failed jobs
and says once, in words, when the policy fires. The loop (``modes``) acts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from pegasus.words import plural

MIN_FINISHED = 10  # a percentage fires only once this many jobs have finished
_SYNTAX = re.compile(r"^(soon|now),fail=(?:(\d+)|(\d+(?:\.\d+)?)%)$")
USAGE = ("--halt must be 'never', 'soon,fail=N' or 'now,fail=N' (N failed jobs), "
         "or with a percentage, 'soon,fail=P%'")


@dataclass(frozen=True)
class Policy:
    """``--halt soon|now,fail=N`` (``count``) or ``fail=P%`` (``percent``)."""

    text: str  # as typed
    now: bool  # stop the running jobs too (else they finish)
    count: Optional[int] = None
    percent: Optional[float] = None


def parse(text: str) -> Optional[Policy]:
    """The policy of ``--halt TEXT``; None for ``never``; ValueError (in words) else."""
    spelled = text.strip().lower().replace(" ", "")
    if spelled == "never":
        return None
    match = _SYNTAX.match(spelled)
    if not match:
        raise ValueError(f"{USAGE}, not '{text}'")
    when, count, percent = match.groups()
    if count is not None and int(count) < 1:
        raise ValueError(f"--halt {text}: fail=N needs N of 1 or more")
    if percent is not None and not 0 < float(percent) <= 100:
        raise ValueError(f"--halt {text}: fail=P% needs P above 0 and at most 100")
    return Policy(text, when == "now", None if count is None else int(count),
                  None if percent is None else float(percent))


class Tally:
    """Finished and failed jobs of a run; ``add`` returns why the policy fired, once."""

    def __init__(self, policy: Optional[Policy]):
        self.policy = policy
        self.finished = self.failed = 0
        self.fired: Optional[str] = None

    def add(self, ok: bool) -> Optional[str]:
        self.finished += 1
        self.failed += not ok
        if self.fired is not None or self.policy is None or ok:
            return None
        self.fired = self._why()
        return self.fired

    def _why(self) -> Optional[str]:
        policy, failed = self.policy, self.failed
        if policy.count is not None:
            return (f"--halt {policy.text}: {plural(failed, 'job')} failed"
                    if failed >= policy.count else None)
        if self.finished < MIN_FINISHED or failed * 100 < policy.percent * self.finished:
            return None
        return (f"--halt {policy.text}: {failed} of {self.finished} finished jobs failed "
                f"({failed * 100 / self.finished:.0f}%)")


def halt_words(why: str, now: bool, running: int) -> str:
    """What Pegasus says when the policy fires (``now``: it stops the running jobs)."""
    waiting = "" if now or not running else \
        f"; waiting for {plural(running, 'running job')} to finish"
    return f"{why}, so no more entries are taken{waiting}"
