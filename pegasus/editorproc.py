"""Lock mode's editor as a process: its own process group, ended as a whole.

The editor may be a wrapper whose child is the real editor (``code --wait``,
an ``$EDITOR`` script, ``sh -c 'vim "$@"'``), so it runs in a process group
of its own and is always signalled as a group: TERM, CONT (a stopped editor
must see the TERM), KILL ``KILL_AFTER`` seconds later if any of it is left.

A group of its own is not the terminal's foreground group, and only that
group may read the keyboard. So, when Pegasus has the terminal, the editor's
group is given it before the editor starts (as a shell gives a job), and
Pegasus takes it back when the editor ends: Ctrl-c and Ctrl-\\ then reach
the editor only. Ctrl-z stops the editor's group: Pegasus takes the terminal
back and stops itself, so the shell gets its prompt; ``fg`` continues
Pegasus, which gives the terminal back to the editor and continues it.

On Linux the editor's first process also gets TERM when Pegasus dies
(``PR_SET_PDEATHSIG``, even by ``kill -9``); its children do not, which is
why lock mode never lets the editor write the queue itself (``lockmode``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional

from pegasus import parentdeath

KILL_AFTER = 3.0  # seconds between TERM and KILL to an editor that must end
POLL = 0.02  # seconds between looks at a group that was told to end
LOOK_EVERY = 0.1  # seconds between looks at an open editor's group for a stop (Ctrl-z)


class Editor:
    """A started editor: ``wait`` for it, ``end`` it, ``close`` (always)."""

    def __init__(self, argv: List[str], restore: List[int]):
        """Start ``argv``; ``restore``: signals Pegasus ignores that the editor must not."""
        self.tty = _foreground_terminal()
        try:
            self.child = subprocess.Popen(argv, preexec_fn=_preexec(self.tty, restore))
        except BaseException:
            self.close()
            raise
        self.group = self.child.pid  # preexec made it a group leader before the exec

    @property
    def returncode(self) -> Optional[int]:
        return self.child.returncode

    def wait(self) -> int:
        """Wait for the editor's first process to exit; a Ctrl-z stops Pegasus too.

        Ctrl-z may stop only part of the editor's group: a wrapper that ignores
        it (or was starting its child as it came) waits on a stopped child, and
        only a look at the editor's whole tree (``/proc``) sees it stopped."""
        while self.child.returncode is None:
            pid, status = os.waitpid(self.child.pid, os.WUNTRACED | os.WNOHANG)
            if pid == 0:
                if self.tty is not None and _stopped_in(self.group):
                    self._suspend()
                else:
                    time.sleep(LOOK_EVERY)
            elif os.WIFSTOPPED(status):
                self._suspend()
            else:
                self.child.returncode = os.waitstatus_to_exitcode(status)
        return self.child.returncode

    def end(self) -> None:
        """TERM to the whole group; KILL to what is left KILL_AFTER seconds later."""
        if not self._signal(signal.SIGTERM):
            return
        self._signal(signal.SIGCONT)
        deadline = time.monotonic() + KILL_AFTER
        while self._alive() and time.monotonic() < deadline:
            time.sleep(POLL)
        self._signal(signal.SIGKILL)
        self.child.wait()  # not ``wait``: a stop reported now must not stop Pegasus

    def close(self) -> None:
        """Take the terminal back (if it was given away) and stop using it."""
        if self.tty is not None:
            _give_terminal(self.tty, os.getpgrp())
            os.close(self.tty)
            self.tty = None

    def _alive(self) -> bool:
        if self.child.returncode is None and self.child.poll() is None:
            return True
        return self._signal(0)

    def _signal(self, signum: int) -> bool:
        """``signum`` to the editor's group; False when none of it is left."""
        try:
            os.killpg(self.group, signum)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def _suspend(self) -> None:
        if self.tty is None:  # stopped by someone else: it continues when they say
            return
        _give_terminal(self.tty, os.getpgrp())
        os.killpg(os.getpgrp(), signal.SIGTSTP)  # Pegasus stops here until `fg`
        _give_terminal(self.tty, self.group)
        self._signal(signal.SIGCONT)
        deadline = time.monotonic() + KILL_AFTER  # seen going on: not a second Ctrl-z
        while _stopped_in(self.group) and time.monotonic() < deadline:
            time.sleep(POLL)


@contextmanager
def started(argv: List[str], restore: List[int]) -> Iterator[Editor]:
    """An Editor for the block; on the way out the terminal is Pegasus's again
    and, unless the block saw it end, the editor's group is ended."""
    editor = Editor(argv, restore)
    try:
        yield editor
    finally:
        try:
            editor.end()  # a wrapper's children left behind end with lock mode
        finally:
            editor.close()


def _stopped_in(group: int) -> bool:
    """Whether a process of the editor's tree (its first process is ``group``) in
    that group is stopped: ``/proc``'s children lists, a few files a look."""
    todo, seen = [group], 0
    while todo and seen < 1000:
        pid = todo.pop()
        seen += 1
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{pid}/task/{pid}/children", "rb") as f:
                todo.extend(int(child) for child in f.read().split())
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile (or no such /proc file: nothing seen)
        if len(fields) > 2 and fields[0] == b"T" and int(fields[2]) == group:
            return True
    return False


def _foreground_terminal() -> Optional[int]:
    """The controlling terminal, when Pegasus's group is its foreground; else None."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if os.tcgetpgrp(fd) == os.getpgrp():
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _give_terminal(tty: int, group: int) -> None:
    """Make ``group`` the terminal's foreground (SIGTTOU would stop a background caller)."""
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(tty, group)
    except OSError:  # that group is gone, or the terminal is
        pass
    finally:
        signal.signal(signal.SIGTTOU, old)


def _preexec(tty: Optional[int], restore: List[int]) -> Callable[[], None]:
    """Runs in the editor's process before the exec: own group, the terminal,
    default signals, and (Linux) TERM when Pegasus dies."""
    die_with_pegasus = parentdeath.arm()

    def preexec() -> None:
        os.setpgid(0, 0)
        if tty is not None:
            _give_terminal(tty, os.getpid())
        for signum in restore:
            signal.signal(signum, signal.SIG_DFL)
        die_with_pegasus()
    return preexec

