"""Error types, written for users.

Every error Pegasus raises on purpose is a PegasusError. Its message says what
is wrong and what to do; ``cli.main`` prints it as ``pegasus: <message>`` and
returns ``exit_status``. Nothing else turns errors into words.
"""

from __future__ import annotations

import errno
from enum import IntEnum

from pegasus.words import plural


class ExitStatus(IntEnum):
    OK = 0
    JOB_FAILED = 1  # some job failed or was interrupted
    BAD_INPUT = 2  # bad usage or bad input; nothing (more) was taken
    UNREACHABLE = 3  # a host could not be connected or authenticated
    NOT_RUNNING = 3  # status, stop, kill: no Pegasus runs on the queue (or none answers)
    IO_ERROR = 74  # Pegasus's own output or records could not be written (sysexits EX_IOERR)
    INTERRUPTED = 130  # Ctrl-c
    TERMINATED = 143  # SIGTERM: running jobs were stopped


class PegasusError(Exception):
    """An error meant for the user. ``str(err)`` is the whole message."""

    exit_status = ExitStatus.BAD_INPUT


class StorageError(PegasusError):
    """A file Pegasus keeps (queue, journal, consumed.yaml) could not be written."""

    exit_status = ExitStatus.IO_ERROR


class UsageError(PegasusError):
    """Bad command line."""


class ControlError(PegasusError):
    """``pegasus status``/``stop``/``kill`` cannot reach a running Pegasus: none
    runs on the queue, or its control folder or socket is not the user's own."""

    exit_status = ExitStatus.NOT_RUNNING


RUN_AGAIN = "fix the file and run again"  # the advice of an error that ends Pegasus
WAITS_FOR_FIX = "fix the file: Pegasus waits and reads it again"  # a daemon's instead


class InputError(PegasusError):
    """Bad hosts or queue file: names the file, the entry and what is wrong.

    ``advice``, when given, is what to do once Pegasus has exited; a mode
    that goes on instead (a daemon waits, lock mode asks or undoes) says what
    it does and drops it (``advising``).
    """

    def __init__(self, what: str, path: str | None = None, line: int | None = None,
                 entry: int | None = None, advice: str | None = None):
        self.what, self.path, self.line, self.entry = what, path, line, entry
        self.advice = advice
        super().__init__(self._words())

    def _words(self) -> str:
        where = self.path or ""
        if self.line is not None:
            where += f":{self.line}"
        if self.entry is not None:
            where += f" (entry {self.entry})"
        what = f"{self.what}; {self.advice}" if self.advice else self.what
        return f"{where}: {what}" if where else what

    def at(self, path: str | None = None, line: int | None = None,
           entry: int | None = None) -> "InputError":
        """The same error with the place filled in (keeps what is known)."""
        return type(self)(self.what, path or self.path,
                          self.line if line is None else line,
                          self.entry if entry is None else entry, self.advice)

    def advising(self, advice: str | None) -> "InputError":
        """The same error with other advice (None: none)."""
        return type(self)(self.what, self.path, self.line, self.entry, advice)


class TemplateError(InputError):
    """A command or hostname template that cannot be rendered verbatim."""


class HostError(PegasusError):
    """A host that cannot be resolved, reached, verified or authenticated."""

    exit_status = ExitStatus.UNREACHABLE
    fatal = False  # a retry may succeed (the host may come back)

    def __init__(self, host: str, reason: str):
        self.host, self.reason = host, reason
        super().__init__(f"host {host}: {reason}")


class HostConfigError(HostError):
    """An ssh_config setting Pegasus cannot honour (bad input: exit 2); no
    retry can succeed while it is there."""

    exit_status = ExitStatus.BAD_INPUT
    fatal = True


class HostKeyError(HostError):
    """A host key that is unknown under a strict policy, or has changed."""

    fatal = True


class SlurmError(HostError):
    """A ``slurm:`` entry Slurm refuses (unknown partition) or cannot serve (no
    Slurm commands here): Slurm's own words; not retried."""

    fatal = True


class HostAuthError(HostError):
    """The host answered but accepted none of our keys."""

    fatal = True


class HostsUnreachable(PegasusError):
    """Some hosts could not be used at start; nothing was taken."""

    exit_status = ExitStatus.UNREACHABLE

    def __init__(self, errors, then: str = ""):
        self.errors = list(errors)
        lines = "\n  ".join(unreachable_lines(self.errors))
        super().__init__(f"cannot use {plural(len(self.errors), 'host')}, so nothing was "
                         f"taken from the queue:\n  {lines}" + (f"\n{then}" if then else ""))


def output_failure(err: Exception) -> str:
    """Pegasus's standard output could not be written, in words (a ValueError:
    a closed file object)."""
    if not isinstance(err, OSError) or err.errno == errno.EBADF:
        return "standard output is closed"
    return f"cannot write to standard output ({err.strerror or err})"


def unreachable_lines(errors, shown: int = 10):
    """One line per host error; past ``shown`` of them, the first few and a count."""
    errors = list(errors)
    lines = [str(err) for err in errors[:shown]]
    if len(errors) > shown:
        lines.append(f"... and {plural(len(errors) - shown, 'more host')} that cannot "
                     "be reached")
    return lines
