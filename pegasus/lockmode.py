"""Lock mode (``pegasus l``): edit the queue file while no Pegasus takes from it.

Owns choosing and running the editor, checking the edited queue and undoing
a rejected edit, all under the lock queue mode takes for every pop
(``QueueFile.locked()``, an flock on ``.queue.yaml.lock``): while the editor
is open nothing is taken, and the editor opens the file as it is once the
lock is held, so entries taken just before are never written back.

Decisions:

- Editor: ``--editor``, else ``$EDITOR`` (empty counts as unset), else
  ``vim``; shlex-split (``"code --wait"`` works), started without a shell,
  the queue path last. Saving by renaming a new file over the queue works
  (the lock is on the sidecar). The lock's descriptor is close-on-exec: the
  editor never holds it, and ``kill -9`` of Pegasus never leaves it stale.
- While the editor runs Pegasus ignores SIGINT and SIGQUIT (as git does), so
  Ctrl-c reaches only the editor; the handlers are restored afterwards.
- The editor never outlives the lock unnoticed: its save would write back the
  queue as it was locked, entries taken since included, and they would run
  twice. SIGTERM or SIGHUP to Pegasus ends the editor first (TERM, KILL 3 s
  later), then the file is checked as after a Ctrl-c and the lock released
  (exit 128 + the signal). On Linux the editor is also started with
  PR_SET_PDEATHSIG, so a ``kill -9`` of Pegasus sends it TERM at once.
- However the editor ends, the file is checked before the lock is released:
  YAML, every entry's shape and, when a hosts file is found, every template
  against its sub-nodes (otherwise Pegasus says templates were not checked).
  A non-zero editor exit is reported and does not change the outcome.
- A bad queue is never silently handed to a running Pegasus. On a terminal
  Pegasus asks ``Reopen the editor? [Y/n/u]``: Y reopens, n keeps the file (a
  running Pegasus stops at the bad entry and reports it), u undoes. Without a
  terminal (scripts, CI), on end of input and after a Ctrl-c it undoes
  without asking: the rejected text goes to ``queue.yaml.rejected``, then the
  queue as it was when the lock was taken is restored atomically, mode kept.
- Exit status: 0 the queue is valid (a one-line preview is printed); 2 the
  edit was undone or kept invalid, or the editor could not start; 130 the
  editor was ended by Ctrl-c (killed by SIGINT or exit status 130), 143 or
  129 Pegasus got SIGTERM or SIGHUP: the file is still checked, and kept if
  valid, undone if not.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Tuple

from pegasus import expand, hostsfile
from pegasus.options import Options
from pegasus.errors import ExitStatus, InputError, PegasusError, UsageError
from pegasus.output import Sink
from pegasus.queuefile import QueueFile, snapshot
from pegasus.words import plural

Ask = Callable[[str], str]  # shows a question, returns the answer typed
QUESTION = "Reopen the editor? [Y/n/u] "
RUN_AGAIN = "; fix the file and run again"  # yamltree's advice after a syntax error
KILL_AFTER = 3.0  # seconds between TERM and KILL to an editor that must end
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class _EndEditor(Exception):
    """Raised by the SIGTERM/SIGHUP handler to stop waiting for the editor."""


class EditRejected(PegasusError):
    """The edited queue was bad and has been undone."""

    def __init__(self, message: str, exit_status: int = ExitStatus.BAD_INPUT):
        super().__init__(message)
        self.exit_status = exit_status


def run(opts: Options, sink: Sink) -> int:
    return edit(opts, sink, _ask_terminal if _stdin_is_terminal() else None)


def edit(opts: Options, sink: Sink, ask: Optional[Ask]) -> int:
    """Lock mode; ``ask`` answers the reopen question (None: undo, no question)."""
    editor = editor_command(opts.editor, os.environ)
    queue = QueueFile(opts.queue_file, on_lock_wait=lambda path: sink.message(
        f"waiting for the queue lock {path} (another Pegasus is taking entries or "
        "someone is editing the queue)"))
    with queue.locked():
        return _Session(opts, sink, editor, ask).loop()


def editor_command(option: Optional[str], env) -> Tuple[list, str, str]:
    """(argv, the editor as given, where it came from)."""
    for given, source in ((option, "--editor"), (env.get("EDITOR"), "$EDITOR")):
        if given and given.strip():
            return _split(given, source), given, source
    return ["vim"], "vim", "the default"


def _split(given: str, source: str) -> list:
    try:
        argv = shlex.split(given)
    except ValueError as err:
        argv, why = [], str(err)
    else:
        why = "it names no program"
    if not argv or not argv[0]:
        raise UsageError(f"cannot read the editor command {given!r} ({source}): {why}")
    return argv


class _Session:
    """One lock-mode run: the editor, the checks, the answer."""

    def __init__(self, opts: Options, sink: Sink, editor, ask: Optional[Ask]):
        self.queue = QueueFile(opts.queue_file)
        self.path, self.ask, self.say = self.queue.path, ask, sink.message  # a link's target
        self.argv, self.given, self.source = editor
        self.before, self.mode = snapshot(self.path)
        self.check, self.note = _checker(opts.hosts_file)

    def loop(self) -> int:
        while True:
            stopped = self.open_editor()
            try:
                entries, jobs = self.queue.check_all(self.check, lock=False)
            except InputError as err:
                if stopped or self.ask is None:
                    raise self.undo(err, stopped)
                answer = self.answer(err)
                if answer == "y":
                    continue
                if answer == "n":
                    return self.keep()
                raise self.undo(err, None)
            self.preview(entries, jobs)
            return stopped or ExitStatus.OK

    def open_editor(self) -> Optional[int]:
        """Run the editor to its end; the exit status it calls for if it was
        stopped (Ctrl-c in the editor, SIGTERM or SIGHUP to Pegasus), else None."""
        try:
            child = subprocess.Popen(self.argv + [self.path], preexec_fn=_dies_with_parent())
        except OSError as err:
            raise UsageError(f"cannot start the editor {self.given!r} ({self.source}): "
                             f"{err.strerror}; give another with --editor or "
                             "$EDITOR") from None
        signum = _wait_for_editor(child)
        if signum is not None:
            self.say(f"{signal.Signals(signum).name}: ended the editor {self.given!r}; "
                     f"checking {self.path} before releasing the lock")
            return 128 + signum
        if child.returncode:
            self.say(f"the editor {self.given!r} {_ending(child.returncode)}; checking "
                     f"{self.path} anyway")
        if child.returncode in (-signal.SIGINT, 128 + signal.SIGINT):
            return ExitStatus.INTERRUPTED
        return None

    def answer(self, err: InputError) -> str:
        print(f"pegasus: {_without_advice(err)}", file=sys.stderr, flush=True)
        while True:
            try:
                answer = self.ask(QUESTION).strip().lower()[:1] or "y"
            except (EOFError, KeyboardInterrupt):
                return "u"
            if answer in ("y", "n", "u"):
                return answer

    def keep(self) -> ExitStatus:
        self.say(f"kept {self.path} with the problem above: a running Pegasus stops "
             "at that entry and reports it until it is fixed")
        return ExitStatus.BAD_INPUT

    def undo(self, err: InputError, stopped: Optional[int]) -> EditRejected:
        rejected = _undo_edit(self.queue, self.before, self.mode)
        status = stopped or ExitStatus.BAD_INPUT
        return EditRejected(f"{err}\n(the edit was undone: {self.path} is back as it "
                            f"was before; the rejected version is in {rejected})",
                            status)

    def preview(self, entries: int, jobs: int) -> None:
        if self.note:
            self.say(self.note)
        self.say(f"{self.path}: {plural(entries, 'entry', 'entries')}, "
             f"{plural(jobs, 'job')}")


def _without_advice(err: InputError) -> InputError:
    """The error without its advice to run again: the question says what to do."""
    return InputError(err.what.replace(RUN_AGAIN, ""), err.path, err.line, err.entry)


def _undo_edit(queue: QueueFile, before: Optional[bytes], mode: Optional[int]) -> str:
    """Keep the edited queue as ``<queue>.rejected``, put ``before`` back.

    Under the lock. Returns the rejected file's path.
    """
    rejected = queue.path + ".rejected"
    edited, _ = snapshot(queue.path)
    queue.write_atomic(rejected, edited or b"")
    if before is None:
        try:
            os.unlink(queue.path)
        except FileNotFoundError:
            pass
    else:
        queue.write_atomic(queue.path, before, mode=mode)
    return rejected


# ---------------------------------------------------------------- checks

def _checker(hosts_path: str):
    """(check for one job, a note to print with the result or None)."""
    if not os.path.exists(hosts_path):
        return _shape_only, (f"no hosts file at {hosts_path}: templates were not "
                             "checked against hosts")
    try:
        nodes = hostsfile.load(hosts_path)
    except InputError as err:
        return _shape_only, f"{err}\n(so templates were not checked against hosts)"
    return expand.checker(nodes), None


def _shape_only(job) -> None:
    """Without hosts only the YAML and the entries' shape are checked."""


# ---------------------------------------------------------------- the editor's process

def _wait_for_editor(child: subprocess.Popen) -> Optional[int]:
    """Wait for the editor to exit; SIGTERM or SIGHUP to Pegasus end it first.

    Returns that signal's number, or None when the editor ended by itself.
    """
    ended: list = []

    def end(signum, _frame):
        ended.append(signum)
        if len(ended) == 1 and child.returncode is None:
            raise _EndEditor

    with _handlers({signal.SIGINT: signal.SIG_IGN, signal.SIGQUIT: signal.SIG_IGN,
                    signal.SIGTERM: end, signal.SIGHUP: end}):
        try:
            child.wait()
        except _EndEditor:
            _end(child)
    return ended[0] if ended else None


def _end(child: subprocess.Popen) -> None:
    """TERM to the editor, KILL if it still runs KILL_AFTER seconds later."""
    child.terminate()
    try:
        child.wait(timeout=KILL_AFTER)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _dies_with_parent() -> Optional[Callable[[], None]]:
    """A preexec_fn asking Linux to send the editor TERM when Pegasus dies
    (even by ``kill -9``); None elsewhere. prctl is looked up before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # Pegasus died before the line above
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec


@contextmanager
def _handlers(handlers: dict) -> Iterator[None]:
    """Signal handlers while the editor runs; Ctrl-c and Ctrl-\\ go to it only."""
    saved = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------- terminal


def _ending(status: int) -> str:
    if status < 0:
        return f"was killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"


def _stdin_is_terminal() -> bool:
    return sys.stdin is not None and not sys.stdin.closed and sys.stdin.isatty()


def _ask_terminal(question: str) -> str:
    sys.stderr.write(question)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line
