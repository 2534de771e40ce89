"""A job's raw output, one stream at a time, cut into lines.

``LineSplitter`` turns one job stream's byte chunks into lines in linear time
with bounded memory (``feed``; ``feed_block`` for the common chunk: its whole
lines as one block, so that no line costs Python work of its own).
``ProgressFilter`` rate-limits progress bars drawn with ``\\r``.

Lines end at ``\\n``, ``\\r`` or ``\\r\\n`` (one terminator, also across
chunks). A line is emitted as soon as its terminator is seen; after a
trailing ``\\r`` the splitter only remembers to drop a ``\\n`` that starts
the next chunk.
"""

from __future__ import annotations

import time
from typing import List, Optional


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

    def feed_block(self, chunk: bytes) -> Optional[bytes]:
        """``feed`` for the common chunk, at memory speed: the lines it completes
        as one block, each ended by ``\\n`` (b"" for none); None when ``chunk``
        needs ``feed``: a ``\\r``, no ``\\n``, a line longer than ``max_line``."""
        end = chunk.rfind(b"\n") + 1
        if not end or self._skip_lf or len(chunk) > self.max_line or b"\r" in chunk \
                or self._held_len + chunk.index(b"\n") > self.max_line:
            return None
        self.cr_ended = None
        block = chunk[:end] if end < len(chunk) else chunk
        if self._held:
            block = b"".join(self._held) + block
        self._held, self._held_len = ([chunk[end:]], len(chunk) - end) if end < len(chunk) \
            else ([], 0)
        return block

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

    def line_ended(self) -> None:
        """A line ended at ``\\n`` (``LineSplitter.feed_block``): any run of updates
        is over, as when ``pick`` gets such a line."""
        self.shown_at = self.held = None

    def close(self) -> List[bytes]:
        """The newest update held back, if any: the job's final state."""
        held, self.held, self.shown_at = self.held, None, None
        return [held] if held is not None else []

