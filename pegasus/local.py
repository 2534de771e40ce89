"""``LocalExecutor``: jobs of ``localhost`` sub-nodes as local processes.

Each job runs as ``sh -c command`` in a session of its own, so Ctrl-c stays
with Pegasus and cancelling signals the job's whole process group.

A Pegasus killed (``kill -9``, a crash) must not leave its local jobs running,
as its remote jobs are not (their wrapper's watchdog): ``_Guard`` is one small
``sh`` per run, started before the first local job (jobs starting together
wait for that one), told each job's process group as it starts and ends on a
pipe only Pegasus writes. At the pipe's end
(Pegasus gone) it sends TERM to the groups still listed, KILL ``KILL_AFTER``
s later. A group is struck off as soon as its leader is reaped (its number
could be another's only once the kernel's process numbers wrap around); what a
job left behind in its group after it ended is spared, as on a node. A paused
Pegasus is no dead one: the guard has no clock.
"""

from __future__ import annotations

import errno
import os
import signal
from typing import Callable, Optional, Tuple

from gevent import select as gselect
from gevent import subprocess
from gevent.lock import Semaphore

from pegasus import faults
from pegasus.executor import (ASIDE_OUTPUT, CHUNK, HOOK_TIMEOUT, KILL_AFTER, Emit, NotStarted,
                              Placed, nothing)


ARG_MAX_KIB = 128  # Linux's limit for one exec argument (MAX_ARG_STRLEN)


class LocalExecutor:
    """Runs jobs as local subprocesses (``localhost``, ``127.0.0.1``, ``::1``)."""

    def __init__(self):
        self.proc = None

    def run(self, command: str, emit: Emit, launching: Callable[[], None] = nothing,
            placed: Optional[Placed] = None) -> int:
        launching()
        _GUARD.ready()  # before the job starts: no job runs with no guard to name it to
        try:
            self.proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         start_new_session=True)  # Ctrl-c stays here
        except OSError as err:
            if err.errno != errno.E2BIG:
                raise NotStarted(err.strerror) from None
            # as sh reports a command it cannot execute: the node is fine
            emit("stderr", f"pegasus: cannot start the command: {err.strerror} (a "
                           f"command is limited to {ARG_MAX_KIB} KiB)\n".encode())
            return 126
        pgid = self.proc.pid  # its session's and group's number
        _GUARD.watch(pgid)
        try:
            return run_to_end(self, emit)
        finally:
            _GUARD.unwatch(pgid)

    def heartbeat(self) -> None:
        """Local jobs need none."""

    def cancel(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, number: int) -> None:
        proc = self.proc
        if proc is not None:
            try:
                os.killpg(proc.pid, number)
            except ProcessLookupError:
                pass

    def run_aside(self, command: str) -> Tuple[int, bytes]:
        """A short command beside the job (a cancel hook): ``sh -c``, in a session of
        its own, ended (KILL) if it outlasts ``HOOK_TIMEOUT``."""
        try:
            done = subprocess.run(["sh", "-c", command], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  start_new_session=True, timeout=HOOK_TIMEOUT)
        except subprocess.TimeoutExpired as err:
            return 137, (err.output or b"")[:ASIDE_OUTPUT]
        return _status(done.returncode), done.stdout[:ASIDE_OUTPUT]

    def silent_for(self) -> None:
        """A local process cannot hang the way a host does."""
        return None

    def close(self) -> None:
        pass


def run_to_end(executor, emit: Emit) -> int:
    """The output of ``executor.proc`` (just started) to ``emit`` until it ends;
    its exit status. Then the executor runs nothing (``proc`` None)."""
    faults.point("exec-sent")
    try:
        _pump(executor.proc, emit)
        status = executor.proc.wait()
    finally:
        executor.proc = None
    return _status(status)


def _status(returncode: int) -> int:
    """128+N for a process killed by signal N, as a shell says."""
    return 128 - returncode if returncode < 0 else returncode


def _pump(proc, emit: Emit) -> None:
    names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
    files = {proc.stdout.fileno(): proc.stdout, proc.stderr.fileno(): proc.stderr}
    while names:
        ready, _, _ = gselect.select(list(names), [], [])
        for fd in ready:
            data = os.read(fd, CHUNK)
            if data:
                emit(names[fd], data)
            else:
                del names[fd]
                files[fd].close()


class _Guard:
    """Ends the local jobs of a Pegasus that died (see the module's docstring)."""

    SCRIPT = ("groups=' '\n"
              "while IFS= read -r line; do\n"
              "  case $line in\n"
              "    +*) groups=\"$groups${line#+} \" ;;\n"
              "    -*) n=${line#-}; case $groups in *\" $n \"*)\n"
              "        groups=\"${groups%% $n *} ${groups#* $n }\" ;; esac ;;\n"
              "  esac\n"
              "done\n"
              "[ \"$groups\" = ' ' ] && exit 0\n"
              "for g in $groups; do kill -s TERM -- \"-$g\"; done\n"
              f"sleep {KILL_AFTER}\n"
              "for g in $groups; do kill -s KILL -- \"-$g\"; done\n")

    def __init__(self):
        self.fd: Optional[int] = None
        self.pid: Optional[int] = None  # the Pegasus it guards (a fork needs its own)
        self.proc = None
        self.starting = Semaphore()  # jobs starting together start one guard, not one each

    def ready(self) -> None:
        """The guard runs (started now if need be; starting yields to other greenlets)."""
        with self.starting:
            if self.fd is None or self.pid != os.getpid():  # none yet (or in a fork)
                self._start()

    def watch(self, pgid: int) -> None:
        """After ``ready()``: the group of a job that started."""
        self._say(f"+{pgid}\n")

    def unwatch(self, pgid: int) -> None:
        self._say(f"-{pgid}\n")

    def _start(self) -> None:
        read, write = os.pipe2(os.O_CLOEXEC)
        try:
            self.proc = subprocess.Popen(
                ["sh", "-c", self.SCRIPT], stdin=read, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)  # Ctrl-c stays with Pegasus
        except OSError:
            os.close(write)
            return  # jobs run unguarded, as before: the guard is no reason to fail one
        finally:
            os.close(read)
        os.set_blocking(write, False)  # a stopped guard must never stop the loop
        self.fd, self.pid = write, os.getpid()

    def _say(self, line: str) -> None:
        if self.fd is not None:
            try:
                os.write(self.fd, line.encode())
            except OSError:  # the guard is gone or stopped (its pipe full): nothing to do
                pass


_GUARD = _Guard()
