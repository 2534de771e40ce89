"""Waiting on one SSH connection's socket, for all the greenlets that share it.

libssh2 reads the socket on every call: a job's read, a heartbeat's write, a
cancel hook's channel each drain whatever has arrived into the session's
buffer, whichever channel it is for. A greenlet waiting on the socket for data
that another greenlet's call has already drained would wait for nothing until
its timer (1 s). So a call that read from the socket wakes the others
(``Socket.after``), and they look at libssh2's buffer again.

Whether a call read anything is the kernel's count of bytes taken from the
socket (``consumed``: ``tcp_info``'s bytes received, less those still queued).
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from contextlib import contextmanager
from typing import Iterator, Optional, Set

import gevent
from gevent.hub import Waiter

TIMER = 1.0  # seconds a wait lasts at most, as in parallel-ssh
_EV_READ, _EV_WRITE = 1, 2  # libev's event bits, for gevent's loop.io()
_BYTES_RECEIVED = 128  # struct tcp_info's tcpi_bytes_received (u64; Linux 4.1 and later)
_TCP_INFO_SIZE = _BYTES_RECEIVED + 8


def consumed(sock) -> Optional[int]:
    """Bytes read from a TCP socket so far, or None where unknown."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
    except (OSError, AttributeError, struct.error, ValueError):
        return None
    if len(info) < _TCP_INFO_SIZE:
        return None
    return struct.unpack_from("Q", info, _BYTES_RECEIVED)[0] - queued


class Socket:
    """The greenlets waiting on one connection's socket."""

    def __init__(self):
        self.waiting: Set[Waiter] = set()

    def wait(self, sock, read: bool, write: bool) -> None:
        """Until the socket is ready, another greenlet read from it, or ``TIMER`` s."""
        hub = gevent.get_hub()
        io = hub.loop.io(sock.fileno(), (_EV_READ if read else 0) | (_EV_WRITE if write else 0))
        timer = hub.loop.timer(TIMER)
        waiter = Waiter(hub)
        io.start(waiter.switch, None)
        timer.start(waiter.switch, None)
        self.waiting.add(waiter)
        try:
            waiter.get()
        finally:
            self.waiting.discard(waiter)
            io.close()
            timer.close()

    @contextmanager
    def after(self, sock) -> Iterator[None]:
        """Wake the waiting greenlets if the block read from the socket (or may
        have: some began to wait during it). Nobody waiting: nothing to count."""
        before = consumed(sock) if self.waiting else None
        try:
            yield
        finally:
            if self.waiting and (before is None or consumed(sock) != before):
                self.wake()

    def wake(self) -> None:
        loop = gevent.get_hub().loop
        for waiter in list(self.waiting):
            loop.run_callback(self._wake, waiter)

    def _wake(self, waiter: Waiter) -> None:
        if waiter in self.waiting:  # still waiting: its socket or timer did not fire first
            self.waiting.discard(waiter)
            waiter.switch(None)


def none_read_since(mark: Optional[int], sock) -> bool:
    """Whether nothing was read from the socket since ``mark`` (or it is unknown)."""
    now = consumed(sock) if mark is not None else None
    return now is None or now == mark
