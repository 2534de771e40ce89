"""Pegasus's standard output, written so that a stalled reader never stops the run.

While a loop runs (``drain`` runs in its own greenlet), writes are queued
and a native thread of the outlet's own writes them out: a reader that pauses
(``| less``, a slow ``tee``, a stalled terminal) blocks that thread only, never
the loop, its heartbeats or Ctrl-c, nor gevent's shared thread pool (name
lookups use it). What is written within ``GATHER`` (5 ms) of a first write
goes out with it, in one hand-off to that thread (each costs ~50 us of CPU:
a job's start and end lines took two). Job output waits (``wait=True``) while more than
``limit`` bytes are queued, so a job's reader stops reading its channel and
the job feels the back-pressure; Pegasus's own words never wait. Outside a
loop (start-up, lock mode) writes go straight out. While job readers wait,
Pegasus reads no SSH socket of theirs, so their hosts seem silent:
``held_since`` tells the watch not to take that silence for a hung host.

A write that fails (a closed pipe, a full disk, no stdout at all) is not a
job's failure: the outlet remembers the error, drops what is queued and
later writes, and tells the loop once (``on_error``), which stops taking
entries; Pegasus's own words then go to stderr (``fallback``).

A status line (``status``, the progress line on a terminal) stays below
everything written: each write out erases it, writes the data (whole lines)
and draws it again, in one write, so it never breaks a line.
"""

from __future__ import annotations

import errno
import sys
import time
from collections import deque
from typing import Callable, Optional

from pegasus.errors import StorageError, output_failure

import gevent
from gevent.event import Event
from gevent.threadpool import ThreadPool

LIMIT = 1 << 20  # bytes of job output queued before job readers wait
# Each hand-off to the writer's thread costs ~50 us of CPU (two thread switches),
# once or twice a job: what comes within GATHER seconds goes out in one hand-off.
GATHER = 0.005
GATHERED = 64 * 1024  # bytes queued that go out at once, without gathering more
ERASE = b"\r\x1b[K"  # back to the start of the line, and clear it


class Outlet:
    def __init__(self, stream, limit: int = LIMIT, fallback=None):
        self.stream, self.limit, self.fallback = stream, limit, fallback
        self.error: Optional[OSError] = None
        if stream is None:  # started with stdout closed (``>&-``)
            self.error = OSError(errno.EBADF, "standard output is closed")
        self.queued: deque = deque()
        self.size = 0
        self.draining = False
        self.holding = 0  # job readers waiting for room now
        self.held_until = float("-inf")  # monotonic time the last of them stopped waiting
        self.status_line = b""  # drawn below the output ("": none)
        self.status_shown = False  # the terminal shows it now
        self.wake, self.room, self.empty = Event(), Event(), Event()
        self.room.set()
        self.empty.set()

    def write(self, data: bytes, wait: bool = False) -> None:
        if self.error is not None:
            return
        if not self.draining:
            return self._out(data)
        self.queued.append(data)
        self.size += len(data)
        self.empty.clear()
        self.wake.set()
        if wait and self.size > self.limit:
            self.room.clear()
            self.holding += 1
            try:
                self.room.wait()
            finally:
                self.holding -= 1
                self.held_until = time.monotonic()

    def status(self, line: bytes) -> None:
        """Draw ``line`` (no newline) below the output from now on; b"": erase it."""
        if self.error is not None or (line == self.status_line and self.status_shown):
            return
        self.status_line = line
        self.write(b"")

    def held_since(self, moment: float) -> bool:
        """Whether job output was held back (its readers waiting) at any time since
        ``moment`` (``time.monotonic()``)."""
        return self.holding > 0 or self.held_until >= moment

    def say(self, data: bytes) -> None:
        """Pegasus's own words: to stderr once stdout has failed."""
        if self.error is None:
            return self.write(data)
        stream = self.fallback if self.fallback is not None else _stderr()
        if stream is None:
            return
        try:
            stream.write(data)
            stream.flush()
        except (OSError, ValueError):
            pass

    def drain(self, on_error: Callable[[OSError], None]) -> None:
        """Write queued data out from a thread until killed (run as a greenlet)."""
        self.draining = True
        pool = ThreadPool(1)  # its own thread: a stalled reader holds nothing shared
        try:
            while True:
                self.wake.wait()
                if self.size < GATHERED and not self.holding:
                    gevent.sleep(GATHER)  # what follows goes in the same hand-off
                self.wake.clear()
                while self.queued and self.error is None:
                    data = self._framed(b"".join(self.queued))
                    self.queued.clear()
                    try:
                        pool.apply(self._out_or_raise, (data,))
                    except OSError as err:
                        self._failed(err)
                        on_error(err)
                    self.size = 0
                    self.room.set()
                self.empty.set()
        finally:
            self.draining = False
            if pool.task_queue.unfinished_tasks:  # a write still blocked: its thread
                gevent.spawn(pool.kill)            # ends once the write returns
            else:
                pool.kill()

    def flush(self) -> None:
        """Wait until what is queued has been written (or dropped)."""
        if self.draining:
            self.empty.wait()

    def _framed(self, data: bytes) -> bytes:
        """``data`` with the status line erased before it and drawn after it."""
        if not (self.status_line or self.status_shown):
            return data
        head = ERASE if self.status_shown else b""
        self.status_shown = bool(self.status_line)
        return head + data + self.status_line

    def _out(self, data: bytes) -> None:
        try:
            self._out_or_raise(self._framed(data))
        except OSError as err:
            self._failed(err)

    def _out_or_raise(self, data: bytes) -> None:
        try:
            self.stream.write(data)
            self.stream.flush()
        except ValueError as err:  # a closed file object
            raise OSError(errno.EBADF, str(err)) from None

    def _failed(self, err: OSError) -> None:
        self.error = err
        self.queued.clear()
        self.size = 0
        self.room.set()
        self.empty.set()


def _stderr():
    return getattr(sys.stderr, "buffer", None)


def write_now(stream, data: bytes) -> None:
    """Write and flush at once, for the commands outside the loop (``pegasus log``,
    ``status``): a closed, full or broken standard output (``stream`` None when
    fd 1 was closed) is a StorageError in words, exit 74."""
    try:
        if stream is None:
            raise OSError(errno.EBADF, "standard output is closed")
        stream.write(data)
        stream.flush()
    except (OSError, ValueError) as err:  # ValueError: a closed file object
        raise StorageError(output_failure(err)) from None
