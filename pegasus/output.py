"""Job output: split raw byte chunks into lines, and print them with prefixes.

``LineSplitter`` turns one job stream's byte chunks into lines in linear time
with bounded memory. ``Sink`` is the single place that writes to the user: job
lines with a ``[sub-node label] `` prefix, the ``=== run/done ===`` frames,
Pegasus's own messages, the progress line (a terminal only) and the
end-of-run summary.

Decisions:

* Lines end at ``\\n``, ``\\r`` or ``\\r\\n`` (one terminator, also across
  chunks). A line is emitted as soon as its terminator is seen; after a
  trailing ``\\r`` the splitter only remembers to drop a ``\\n`` that starts
  the next chunk.
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
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from pegasus.outlet import Outlet
from pegasus.words import plural

_PALETTE = (31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96)
_RESET = "\x1b[0m"
_ESCAPE = re.compile(r"(\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_])")
_MIN_ROOM = 20  # never wrap job text narrower than this many characters
_SHORT = 80  # commands in the summary are shortened to this many characters


class LineSplitter:
    """Split one stream's byte chunks into lines, without their terminators.

    Between calls at most ``max_line`` bytes are held; a longer line comes out
    in pieces of ``max_line`` bytes. Each ``feed`` costs O(len(chunk)) plus at
    most one join of the held bytes, so total work is linear in the data.
    """

    def __init__(self, max_line: int = 65536):
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self.max_line = max_line
        self._held: List[bytes] = []  # start of an unterminated line
        self._held_len = 0
        self._skip_lf = False  # the last chunk ended in "\r"
        self.cr_ended: Optional[List[bool]] = None  # see feed()

    @property
    def buffered(self) -> int:
        """How many bytes of an unterminated line are held."""
        return self._held_len

    def feed(self, chunk: bytes) -> List[bytes]:
        """Return the lines completed by ``chunk``.

        ``self.cr_ended`` is then None when no line ended at a lone ``\r``,
        else a flag for each line returned: whether it did (a progress update).
        """
        self.cr_ended = None
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if not chunk:
            return []
        if b"\r" in chunk:
            return self._feed_marked(chunk)
        parts = chunk.splitlines()  # bytes split only at \r, \n and \r\n
        rest = b"" if chunk[-1:] == b"\n" else parts.pop()
        if not parts:
            return self._hold(rest)
        if self._held:
            parts[0] = b"".join(self._held) + parts[0]
            self._held, self._held_len = [], 0
        if len(chunk) > self.max_line or len(parts[0]) > self.max_line:
            parts = self._cut_long(parts)
        if rest:
            parts.extend(self._hold(rest))
        return parts

    def _feed_marked(self, chunk: bytes) -> List[bytes]:
        """``feed`` for a chunk with a ``\r``: each line with how it ended."""
        ended = chunk.splitlines(keepends=True)
        last = chunk[-1:]
        self._skip_lf = last == b"\r"
        rest = b"" if last in (b"\n", b"\r") else ended.pop()
        lines: List[bytes] = []
        marks: List[bool] = []
        for i, part in enumerate(ended):
            cut = 2 if part.endswith(b"\r\n") else 1
            line = part[:-cut]
            if i == 0 and self._held:
                line = b"".join(self._held) + line
                self._held, self._held_len = [], 0
            pieces = [line[k:k + self.max_line]
                      for k in range(0, len(line), self.max_line)] or [b""]
            lines.extend(pieces)
            marks.extend([False] * (len(pieces) - 1) + [cut == 1 and part[-1:] == b"\r"])
        if rest:
            held = self._hold(rest)
            lines.extend(held)
            marks.extend([False] * len(held))
        self.cr_ended = marks
        return lines

    def close(self) -> List[bytes]:
        """Return the unterminated rest, if any, and reset."""
        rest = b"".join(self._held)
        self._held, self._held_len, self._skip_lf = [], 0, False
        return [rest] if rest else []

    def _hold(self, data: bytes) -> List[bytes]:
        """Keep ``data`` as the start of a line; emit full pieces if too long."""
        self._held.append(data)
        self._held_len += len(data)
        if self._held_len <= self.max_line:
            return []
        held = b"".join(self._held)
        n = self.max_line
        cut = (len(held) - 1) // n * n  # keep 1..max_line bytes held
        self._held, self._held_len = [held[cut:]], len(held) - cut
        return [held[i:i + n] for i in range(0, cut, n)]

    def _cut_long(self, lines: List[bytes]) -> List[bytes]:
        n = self.max_line
        if max(map(len, lines)) <= n:
            return lines
        out: List[bytes] = []
        for line in lines:
            if len(line) <= n:
                out.append(line)
            else:
                out.extend(line[i:i + n] for i in range(0, len(line), n))
        return out


class ProgressFilter:
    """Progress bars drawn with ``\r``: at most one update every ``every`` s.

    A line that ended at a lone ``\r`` is a progress update. The first of a
    run of updates shows at once; the next ones show only when ``every``
    seconds have passed since the last one shown (the newest then); a line
    that ends at ``\n`` ends the run (it is the final state) and always shows,
    and so does the newest update held back when the job ends.
    """

    def __init__(self, every: float = 2.0, clock=time.monotonic):
        self.every, self.clock = every, clock
        self.shown_at: Optional[float] = None  # last update shown, in this run
        self.held: Optional[bytes] = None  # newest update not shown

    def pick(self, lines: List[bytes], cr_ended: Optional[List[bool]]) -> List[bytes]:
        if cr_ended is None:
            if lines:
                self.shown_at = self.held = None
            return lines
        out: List[bytes] = []
        now = None
        for line, update in zip(lines, cr_ended):
            if not update:
                self.shown_at = self.held = None
                out.append(line)
                continue
            if not line:  # the "\r" that starts a redraw: nothing to show
                continue
            now = self.clock() if now is None else now
            if self.shown_at is None or now - self.shown_at >= self.every:
                self.shown_at, self.held = now, None
                out.append(line)
            else:
                self.held = line
        return out

    def close(self) -> List[bytes]:
        """The newest update held back, if any: the job's final state."""
        held, self.held, self.shown_at = self.held, None, None
        return [held] if held is not None else []


def one_line(text: str, limit: Optional[int] = None) -> str:
    """``text`` on one line (newlines shown as \\n), shortened to ``limit``."""
    flat = text.replace("\r", "\\r").replace("\n", "\\n")
    if limit is not None and len(flat) > limit:
        flat = flat[:limit - 1] + "\u2026"
    return flat


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


def _step_command(results: Sequence) -> str:
    """The step's command: rendered if every sub-node ran the same text."""
    if not results:
        return ""
    rendered = {r.rendered for r in results}
    text = rendered.pop() if len(rendered) == 1 else results[0].job.command
    return one_line(text, _SHORT)


Missed = Tuple[Tuple[str, str], ...]  # (label, why) of the sub-nodes that did not run a step
_NAMED = 5  # sub-nodes named in a "not run on" list; the others are counted


@dataclass
class _StepRow:
    """One step of the summary, or consecutive steps that went alike (same
    sub-nodes left out, none failed): they share a row, so memory stays flat."""

    first: int
    last: int
    commands: Tuple[str, str]  # of the first and the last step
    ok: int
    failed: str  # "1 failed: [node-3] exit 128", or ""
    missed: Missed

    def text(self) -> str:
        if self.first == self.last:
            row = f"  step {self.first} '{self.commands[0]}': {self.ok} ok"
        else:
            row = (f"  steps {self.first}-{self.last} ('{self.commands[0]}' ... "
                   f"'{self.commands[1]}'): {self.ok} ok each")
        if self.failed:
            row += f", {self.failed}"
        return row + _not_run(self.missed)

    def absorbs(self, other: "_StepRow") -> bool:
        """Whether ``other``, the next step, is told by this row (and now is)."""
        if self.failed or other.failed or not other.missed or other.first != self.last + 1 \
                or (other.ok, other.missed) != (self.ok, self.missed):
            return False
        self.last, self.commands = other.last, (self.commands[0], other.commands[1])
        return True


def _step_row(number: int, results: Sequence, missed: Missed) -> _StepRow:
    failed = [r for r in results if not r.ok]
    words = f"{len(failed)} failed: " + "; ".join(
        f"{r.node.label} {r.describe()}" for r in failed) if failed else ""
    command = _step_command(results)
    return _StepRow(number, number, (command, command), len(results) - len(failed), words,
                    missed)


def _not_run(missed: Missed) -> str:
    """``; not run on [a], [b] (why); [c] (why)``: the first few named, grouped by why."""
    if not missed:
        return ""
    named: Dict[str, List[str]] = {}
    for label, why in missed[:_NAMED]:
        named.setdefault(why, []).append(label)
    groups = [f"{', '.join(labels)} ({why})" for why, labels in named.items()]
    if len(missed) <= _NAMED:
        return "; not run on " + "; ".join(groups)
    more = f" and {len(missed) - _NAMED} more"
    if len(named) == 1 and all(why == missed[0][1] for _, why in missed):
        return (f"; not run on {len(missed)} sub-nodes: {', '.join(named[missed[0][1]])}"
                f"{more} ({missed[0][1]})")
    return f"; not run on {len(missed)} sub-nodes: " + "; ".join(groups) + more


class StepTable:
    """The broadcast summary's rows, in memory that stays flat over many steps.

    Every failed step keeps its row; so do steps some sub-node did not run
    (left out earlier: lost, not responding), consecutive alike ones sharing
    a row; steps that succeeded everywhere keep theirs while there are at
    most ``ok_rows`` of them, and are only counted after that.
    """

    def __init__(self, ok_rows: int = 100):
        self.ok_rows = ok_rows
        self.steps = self.failed = self.missed = 0  # steps; with failures; not run everywhere
        self.marked = 0  # steps with failures or not run everywhere: their rows are kept
        self.rows: List[Tuple[_StepRow, bool]] = []  # (row, whether it is kept for good)
        self.ok_uncounted = 0  # succeeded steps whose rows were dropped
        self.out: Dict[object, str] = {}  # sub-nodes left out for the rest of the run: why

    def leave_out(self, node, why: str, in_step: bool) -> None:
        """``node`` takes no further steps: ``why`` (``connection lost``), and since when."""
        if node not in self.out:
            when = (f"in step {self.steps + 1}" if in_step else
                    f"after step {self.steps}" if self.steps else "before step 1")
            self.out[node] = f"{why} {when}"

    def add(self, results: Sequence, nodes: Sequence = ()) -> Missed:
        """One step's results; ``nodes``: every sub-node of the run. Returns those
        of them that did not run it, and why."""
        ran = {r.node for r in results}
        missed = tuple((n.label, self.out.get(n, "not connected")) for n in nodes
                       if n not in ran)
        self.steps += 1
        failed = any(not r.ok for r in results)
        self.failed += failed
        self.missed += bool(missed)
        marked = failed or bool(missed)
        self.marked += marked
        row = _step_row(self.steps, results, missed)
        if not (self.rows and self.rows[-1][0].absorbs(row)):
            self.rows.append((row, marked))
        if not marked and self.steps - self.marked > self.ok_rows:
            self.ok_uncounted = self.steps - self.marked
            self.rows = [(r, kept) for r, kept in self.rows if kept]
        return missed


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
        rows = [f"  {r.node.label} '{one_line(r.rendered, _SHORT)}' ({r.describe()})"
                for r in failed]
        self._write(self._tagged(head + rows + ([extra] if extra else [])))

    def step_report(self, number: int, results: Sequence, missed: Missed = ()) -> None:
        """Broadcast mode: how one step went, right after it finished, and which
        sub-nodes (left out earlier) did not run it."""
        failed = [r for r in results if not r.ok]
        head = f"step {number} '{_step_command(results)}': "
        if not failed:
            every = "the sub-node" if len(results) == 1 else f"all {len(results)} sub-nodes"
            self._write(self._tagged([head + f"{every} succeeded" + _not_run(missed)]))
            return
        rows = [f"  {r.node.label} {r.describe()}" for r in failed]
        self._write(self._tagged([head + f"{len(failed)} of {len(results)} sub-nodes "
                                  "failed" + _not_run(missed) + ":"] + rows))

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
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return shutil.get_terminal_size().columns
