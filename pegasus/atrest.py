"""Whether the queue file's last entry is whole, so that it may be taken.

A writer without the lock (``printf -- '- comm' >> queue.yaml`` then
``printf 'and\\n' >> queue.yaml``, or a script writing an entry line by line)
may be half-way through the file's last entry, and no text shows it: YAML
lets the next line continue any entry, a newline or not. So an entry is
whole when another entry follows it (its writer went on), and the last one
only when the file is at rest: as Pegasus last saw it whole (read whole at
start, or as its own rewrite left it), or not written for ``QUIET`` seconds.
The queue file's rewrites keep its modification time, so that it keeps
saying when a writer last wrote.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterator, Optional, Tuple

from pegasus.errors import InputError
from pegasus.yamltree import Item

Signature = Tuple[int, int, int]  # (mtime_ns, size, inode): changes with every write
QUIET = 1.0  # seconds without a write after which the file's last entry counts as whole
COARSE_MTIME = 2.0  # how far behind a filesystem that keeps whole seconds may be (FAT: 2 s)


def signature(st: Optional[os.stat_result]) -> Optional[Signature]:
    return None if st is None else (st.st_mtime_ns, st.st_size, st.st_ino)


class Rest:
    """One queue file's rest: what Pegasus saw whole, what it saw unchanged since when."""

    def __init__(self, path: str):
        self.path = path
        self.whole: Optional[Signature] = None  # the file as last seen whole, by Pegasus
        self._unchanged: Tuple[Optional[Signature], float] = (None, 0.0)  # since (monotonic)

    def saw_whole(self, st: Optional[os.stat_result]) -> None:
        self.whole = signature(st)

    def rewritten(self, old: os.stat_result, new: os.stat_result) -> None:
        """Pegasus replaced the file ``old`` by ``new``, which adds nothing a writer
        wrote: ``new`` is at rest if ``old`` was, or unchanged since ``old`` was seen."""
        if self.at_rest(old):
            self.whole = signature(new)
        elif self._unchanged[0] == signature(old):
            self._unchanged = (signature(new), self._unchanged[1])

    def now(self) -> bool:
        """``at_rest`` of the file as it is."""
        try:
            return self.at_rest(os.stat(self.path))
        except FileNotFoundError:
            return True

    def at_rest(self, st: Optional[os.stat_result]) -> bool:
        """Whether no writer can still be half-way through the file's last entry."""
        if st is None or signature(st) == self.whole or QUIET <= 0:
            return True
        late = COARSE_MTIME if st.st_mtime_ns % 1_000_000_000 == 0 else 0.0
        if time.time() - st.st_mtime_ns / 1e9 >= QUIET + late:
            return True
        # Written in the last QUIET seconds, or dated in the future (a file server's
        # clock ahead of ours): at rest once it has not changed for QUIET seconds.
        seen, since = self._unchanged
        now = time.monotonic()
        if seen != signature(st):
            self._unchanged = (signature(st), now)
            return False
        return now - since >= QUIET + late


class Whole:
    """The entries known to be whole, in order: each one followed by another
    entry, the last one only if the file is at rest (else ``held_back``)."""

    def __init__(self, items: Iterator[Item], at_rest: Callable[[], bool]):
        self._items, self._at_rest = items, at_rest
        self.held_back = False

    def __iter__(self) -> Iterator[Item]:
        held = next(self._items, None)
        while held is not None:
            try:
                following = next(self._items, None)
            except InputError:  # the next entry is bad: this one is followed, whole
                yield held
                raise
            if following is None and not self._at_rest():  # asked once read to the end
                self.held_back = True
                return
            yield held
            held = following
