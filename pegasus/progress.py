"""The progress line: what a run has done and has left, in one line of words.

Pure: the loop gives its counts (``Counts``) and the time since it started;
``Sink.progress`` keeps the line at the bottom of the terminal (``Outlet``
erases it before output and draws it again after). The estimate of the time
left assumes the jobs left take as long, on average, as the jobs done so far
took at the parallelism the run had: elapsed x left / done.
"""

from __future__ import annotations

from dataclasses import dataclass

from pegasus.words import plural

EVERY = 1.0  # seconds between two draws of the line, at least


@dataclass(frozen=True)
class Counts:
    """Queue mode: jobs. Broadcast mode (``steps``): steps done, queued and with
    failures, and the sub-nodes running the current step."""

    done: int
    running: int
    queued: int  # jobs in the queue file: found by the start-up check, less those taken
    failed: int
    steps: bool = False


def line(counts: Counts, elapsed: float) -> str:
    """``pegasus: 12 done, 4 running, 84 queued, 1 failed, 1:23 elapsed, about 9:43 left``."""
    c = counts
    if c.steps:
        parts = [f"step {c.done + 1} running on {plural(c.running, 'sub-node')}"
                 if c.running else "no step running",
                 f"{plural(c.done, 'step')} done", f"{c.queued} queued"]
        failed, left = f"{c.failed} with failures", c.queued + (1 if c.running else 0)
    else:
        parts = [f"{c.done} done", f"{c.running} running", f"{c.queued} queued"]
        failed, left = f"{c.failed} failed", c.queued + c.running
    if c.failed:
        parts.append(failed)
    parts.append(f"{clock(elapsed)} elapsed")
    if c.done and left:
        parts.append(f"about {clock(elapsed * left / c.done)} left")
    return "pegasus: " + ", ".join(parts)


def clock(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03``, ``3d 4:05:06``: whole seconds."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}" if hours or days else f"{minutes}:{secs:02d}"
    return f"{days}d {text}" if days else text
