"""Job output and Pegasus's own words, printed: the one sink.

``Sink`` is the single place that writes to the user: job lines with a
``[sub-node label] `` prefix, the ``=== run/done ===`` frames, Pegasus's own
messages, the progress line (a terminal only) and the end-of-run summary.
Lines come cut by ``lines.LineSplitter``; broadcast's summary rows are
``steps.StepTable``'s.

Decisions:

* stdout and stderr lines get the same prefix, in colour or not, so that the
  output of one sub-node stays greppable by its label whichever stream it
  came from. Both streams count towards the sub-node's print period.
* With colour, each prefix starts with a full reset, so colours a job left
  switched on do not leak into the label, and ends with a reset after the label.
* Without a width (a pipe) job bytes pass through untouched. With a width only
  the lines that do not fit are decoded (utf-8, errors="replace") and wrapped
  by characters; ANSI escape sequences in the job's text count as zero width
  and are never cut. Double-width characters count as one.
* Print period N prints lines 1, N+1, 2N+1, ... of a sub-node's job output,
  so the first line of every job shows up immediately.
* Every line printed, on a pipe or a file (print period 1, no width): a block
  of whole lines gets its prefixes all at once (``block``), at memory speed.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Dict, List, Optional, Sequence, Tuple

from pegasus.outlet import Outlet
from pegasus.steps import SHORT as _SHORT, Missed, StepTable, not_run, step_command
from pegasus.words import one_line, plural

__all__ = ["Sink", "StepTable", "one_line", "wrap_text"]

_PALETTE = (31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96)
_RESET = "\x1b[0m"
_ESCAPE = re.compile(r"(\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_])")
_MIN_ROOM = 20  # never wrap job text narrower than this many characters


def wrap_text(text: str, room: int) -> List[str]:
    """Cut ``text`` into pieces of ``room`` visible characters.

    ANSI escape sequences count as zero width and are kept whole.
    """
    if "\x1b" not in text:
        return [text[i:i + room] for i in range(0, len(text), room)] or [""]
    pieces: List[str] = []
    current, used = [], 0
    for k, token in enumerate(_ESCAPE.split(text)):
        if k % 2:  # an escape sequence: zero width, stays with the text before
            current.append(token)
            continue
        while token:
            if used == room:
                pieces.append("".join(current))
                current, used = [], 0
            take = token[:room - used]
            current.append(take)
            used += len(take)
            token = token[len(take):]
    pieces.append("".join(current))
    return pieces


class Sink:
    """Where all of Pegasus's output goes, through one ``Outlet``.

    ``color`` colours each sub-node's label (by ``node.index``); ``width``
    wraps job lines to the terminal, ``None`` never wraps; ``print_period``
    is 1 for every line, N for every Nth line per sub-node, 0 for none.
    """

    progress_every = 2.0  # seconds between two \r progress updates shown (ProgressFilter)

    def __init__(self, stream, color: bool, width: Optional[int],
                 print_period: int = 1, progress: bool = False):
        if print_period < 0:
            raise ValueError("print_period must be 0 or more")
        self.outlet = Outlet(stream)
        self.shows_progress = progress and width is not None  # a terminal's last line
        self.color = color
        self.width = width
        self.print_period = print_period
        self._prefixes: Dict[object, Tuple[bytes, int]] = {}
        self._counts: Dict[object, int] = {}
        tag = "\x1b[1mpegasus:\x1b[0m " if color else "pegasus: "
        self._tag = tag.encode()

    @classmethod
    def for_terminal(cls, stream, print_period: int = 1,
                     environ=os.environ) -> "Sink":
        """A sink with colour and wrapping only when ``stream`` is a terminal."""
        isatty = getattr(stream, "isatty", None)
        tty = bool(isatty and isatty())
        color = tty and "NO_COLOR" not in environ and environ.get("TERM") != "dumb"
        width = _terminal_width(stream, environ) if tty else None
        return cls(stream, color, width, print_period,
                   progress=tty and environ.get("TERM") != "dumb")

    # -- job output -----------------------------------------------------

    def lines(self, node, stream_name: str, lines: Sequence[bytes]) -> None:
        """Print job output lines of one sub-node (stdout or stderr)."""
        picked = self._pick(node, lines)
        if not picked:
            return
        prefix, prefix_width = self._prefix(node)
        if self.width is not None:
            picked = self._wrap(picked, max(self.width - prefix_width, _MIN_ROOM))
        self.outlet.write(b"".join((prefix, (b"\n" + prefix).join(picked), b"\n")), wait=True)

    def block(self, node, stream_name: str, block: bytes) -> None:
        """Print job output lines of one sub-node given as one block, each line
        ended by ``\\n`` (``LineSplitter.feed_block``): when every line is printed
        as it is (print period 1, no wrapping), all prefixes go in at once."""
        if self.print_period != 1 or self.width is not None:
            return self.lines(node, stream_name, block[:-1].split(b"\n"))
        prefix = self._prefix(node)[0]
        self.outlet.write(prefix + block[:-1].replace(b"\n", b"\n" + prefix) + b"\n",
                          wait=True)

    def job_started(self, node, command: str, job_id: Optional[int] = None,
                    attempt: int = 1) -> None:
        """Print the ``=== run #17 'command' ===`` frame (a retry: ``=== run #17
        (attempt 2) 'command' ===``) and restart the print period."""
        self._counts.pop(node, None)
        number = "" if job_id is None else f"#{job_id} "
        number += f"(attempt {attempt}) " if attempt > 1 else ""
        self._frame(node, f"=== run {number}'{one_line(command)}' ===")

    def job_done(self, node, result) -> None:
        """Print ``=== done (exit N) ===`` or ``=== done (<error>) ===`` (plus
        ``; it runs again`` for a failed attempt that is retried)."""
        again = "; it runs again" if result.retrying else ""
        self._frame(node, f"=== done ({result.describe()}{again}) ===")

    def command(self, node, text: str) -> None:
        """A dry run's job: its command under the sub-node's label (every line,
        whatever the print period); lines after the first start ``> ``."""
        prefix = self._prefix(node)[0]
        lines = text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
        shown = [lines[0]] + [f"> {line}" for line in lines[1:]]
        self.outlet.write(b"".join(prefix + line.encode() + b"\n" for line in shown))

    def output_held_since(self, moment: float) -> bool:
        """Whether job output waited for a stalled stdout since ``moment``."""
        return self.outlet.held_since(moment)

    # -- Pegasus's own words -------------------------------------------

    def message(self, text: str) -> None:
        """Print a line (or lines) from Pegasus itself, prefixed ``pegasus: ``."""
        self._write(self._tagged(text.splitlines() or [""]))

    def progress(self, text: str) -> None:
        """The progress line, kept at the bottom of a terminal below every line
        written ("": erase it). Not on anything but a terminal."""
        if self.shows_progress:  # one column short: a full line would wrap
            room = self.width - 1 if self.width > 1 else 79  # 0: the size is unknown
            self.outlet.status(text[:room].encode())

    def summary(self, results: Sequence, extra: Optional[str] = None,
                total: Optional[int] = None) -> None:
        """Print the end-of-run summary: counts and every job that failed.

        ``total``: how many jobs ran, when ``results`` holds only some of
        them (the failed ones at least).
        """
        failed = [r for r in results if not r.ok]
        total = len(results) if total is None else total
        jobs = plural(total, "job")
        if not total:
            head = ["no jobs ran"]
        elif not failed:
            head = [f"{jobs}, all succeeded"]
        else:
            head = [f"{jobs}, {len(failed)} failed:"]
        rows = [f"  {r.node.label} {id_tag(r)}'{one_line(r.rendered, _SHORT)}' "
                f"({r.describe()})" for r in failed]
        self._write(self._tagged(head + rows + ([extra] if extra else [])))

    def step_report(self, number: int, results: Sequence, missed: Missed = ()) -> None:
        """Broadcast mode: how one step went, right after it finished, and which
        sub-nodes (left out earlier) did not run it."""
        failed = [r for r in results if not r.ok]
        head = f"step {number} '{step_command(results)}': "
        if not failed:
            every = "the sub-node" if len(results) == 1 else f"all {len(results)} sub-nodes"
            self._write(self._tagged([head + f"{every} succeeded" + not_run(missed)]))
            return
        rows = [f"  {r.node.label} {r.describe()}" for r in failed]
        self._write(self._tagged([head + f"{len(failed)} of {len(results)} sub-nodes "
                                  "failed" + not_run(missed) + ":"] + rows))

    def step_output(self, results: Sequence, stopped: bool = False) -> None:
        """Broadcast mode, after a step: nothing here, each line was printed as it
        came (``fold.FoldedSteps`` prints the step's output folded)."""

    def broadcast_summary(self, table: "StepTable", extra: Optional[str] = None) -> None:
        """Broadcast mode: one row per step, failed and left-out sub-nodes named,
        the rest counted."""
        if not table.steps:
            head = ["no steps ran"]
        else:
            marks = ([f"{table.failed} with failures"] if table.failed else []) + \
                ([f"{table.missed} not run on every sub-node"] if table.missed else [])
            head = [f"{plural(table.steps, 'step')}, " +
                    (", ".join(marks) if marks else "all succeeded on every sub-node") + ":"]
        rows = [row.text() for row, _ in table.rows]
        if table.ok_uncounted:
            rows.append(f"  and {plural(table.ok_uncounted, 'other step')} that succeeded "
                        "on every sub-node")
        self._write(self._tagged(head + rows + (extra.splitlines() if extra else [])))

    # -- helpers -----------------------------------------------------------

    def _pick(self, node, lines: Sequence[bytes]) -> List[bytes]:
        """The lines the print period lets through; counts per sub-node."""
        period = self.print_period
        if period == 1 or not lines:
            return list(lines)
        if period == 0:
            return []
        seen = self._counts.get(node, 0)
        self._counts[node] = seen + len(lines)
        return list(lines[(-seen) % period::period])

    def _prefix(self, node) -> Tuple[bytes, int]:
        """The cached prefix bytes of ``node`` and its width in characters."""
        key = (node, node.slots)  # a lane's label shows its job's slots
        cached = self._prefixes.get(key)
        if cached is None:
            label = node.label
            if self.color:
                code = _PALETTE[node.colour % len(_PALETTE)]
                text = f"{_RESET}\x1b[{code}m{label}{_RESET} "
            else:
                text = label + " "
            cached = self._prefixes[key] = (text.encode(), len(label) + 1)
        return cached

    def _wrap(self, lines: List[bytes], room: int) -> List[bytes]:
        if max(map(len, lines)) <= room:  # bytes >= characters: all fit
            return lines
        out: List[bytes] = []
        for line in lines:
            if len(line) <= room:
                out.append(line)
                continue
            text = line.decode("utf-8", "replace")
            out.extend(piece.encode() for piece in wrap_text(text, room))
        return out

    def _frame(self, node, text: str) -> None:
        self.outlet.write(self._prefix(node)[0] + text.encode() + b"\n", wait=True)

    def _tagged(self, texts: List[str]) -> bytes:
        return b"".join(self._tag + t.encode() + b"\n" for t in texts)

    def _write(self, data: bytes) -> None:
        """Pegasus's own words (never wait; to stderr once stdout has failed)."""
        self.outlet.say(data)


def _terminal_width(stream, environ) -> int:
    """Columns of the terminal ``stream`` is on ($COLUMNS wins, as in shutil)."""
    columns = environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = shutil.get_terminal_size().columns
    return columns or 80  # a pty nobody sized says 0 (docker exec -t): as shutil does


def id_tag(result) -> str:
    """``#17 `` (its id, for ``pegasus log 17``), or nothing for a job without one."""
    return "" if result.job.id is None else f"#{result.job.id} "
