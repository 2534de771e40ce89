"""Lock mode (``pegasus l``): edit the queue file while no Pegasus takes from it.

Owns choosing and running the editor, checking the edited queue and saving
or rejecting the edit, all under the lock queue mode takes for every pop
(``QueueFile.locked()``, an flock on ``.queue.yaml.lock``): while the editor
is open nothing is taken, and the editor gets the file as it is once the
lock is held, so entries taken just before are never written back.

Decisions:

- The editor edits a private copy (``$TMPDIR/pegasus-edit-*/queue.yaml``),
  never the queue: only Pegasus, while it holds the lock, writes the copy
  back. An editor that outlives lock mode (``kill -9``, a wrapper's child
  that no signal reached, ``code --wait``'s window) saves into the copy,
  which nobody reads: entries taken since can never come back and run
  twice. Entries appended to the queue with ``>>`` meanwhile are kept after
  the edit; a queue changed in any other way without the lock is not
  overwritten (the edit goes to ``queue.yaml.rejected``).
- Editor: ``--editor``, else ``$EDITOR`` (empty counts as unset), else
  ``vim``; shlex-split (``"code --wait"`` works), started without a shell,
  the copy's path last. The lock's descriptor is close-on-exec: the editor
  never holds it, and ``kill -9`` of Pegasus never leaves it stale.
- The editor runs in its own process group, the terminal's foreground
  (``editorproc``): Ctrl-c and Ctrl-\\ reach the editor only, Ctrl-z
  suspends lock mode with it. Pegasus also ignores SIGINT and SIGQUIT from
  before the editor starts until it has ended (as git does).
- However lock mode ends, the editor's whole group ends with it: SIGTERM or
  SIGHUP to Pegasus ends it first (TERM, KILL 3 s later), then the copy is
  checked as after a Ctrl-c (exit 128 + the signal); a wrapper's children
  left when it exits are ended too. On Linux the editor's first process gets
  TERM when Pegasus dies by ``kill -9`` (PR_SET_PDEATHSIG).
- However the editor ends, the copy is checked before it is saved: YAML,
  every entry's shape and, when a hosts file is found, every template
  against its sub-nodes (otherwise Pegasus says templates were not checked).
  A non-zero editor exit is reported and does not change the outcome.
- A bad queue is never silently handed to a running Pegasus. On a terminal
  Pegasus asks ``Reopen the editor? [Y/n/u]``: Y reopens the copy, n saves it
  as it is (a running Pegasus stops at the bad entry and reports it), u
  undoes. Without a terminal (scripts, CI), on end of input and after a
  Ctrl-c it undoes without asking: the rejected text goes to
  ``queue.yaml.rejected`` and the queue is left as it was.
- Exit status: 0 the queue is valid (a one-line preview is printed); 2 the
  edit was undone or kept invalid, or the editor could not start; 130 the
  editor was ended by Ctrl-c (killed by SIGINT or exit status 130), 143 or
  129 Pegasus got SIGTERM or SIGHUP: the copy is still checked, and saved if
  valid, undone if not.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import tempfile
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Tuple

from pegasus import editorproc, expand, hostsfile
from pegasus.options import Options
from pegasus.errors import ExitStatus, InputError, PegasusError, UsageError
from pegasus.output import Sink
from pegasus.queuefile import QueueFile, replace_edited, snapshot
from pegasus.words import plural

Ask = Callable[[str], str]  # shows a question, returns the answer typed
QUESTION = "Reopen the editor? [Y/n/u] "
_IGNORED = (signal.SIGINT, signal.SIGQUIT)  # while the editor runs: they are the editor's


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
    with queue.locked(), _workspace() as folder:
        return _Session(opts, sink, editor, ask, folder).loop()


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
    """One lock-mode run: the editor on a copy, the checks, the answer, the save."""

    def __init__(self, opts: Options, sink: Sink, editor, ask: Optional[Ask], folder: str):
        self.queue = QueueFile(opts.queue_file)
        self.path, self.ask, self.say = self.queue.path, ask, sink.message  # a link's target
        self.argv, self.given, self.source = editor
        self.before, _ = snapshot(self.path)
        self.copy = os.path.join(folder, os.path.basename(self.path))
        if self.before is not None:
            self.queue.write_atomic(self.copy, self.before, mode=0o600)
        self.check, self.note = _checker(opts.hosts_file)

    def loop(self) -> int:
        while True:
            stopped = self.open_editor()
            try:
                entries, jobs = self.queue.check_all(self.check, lock=False, text_of=self.copy)
            except InputError as err:
                if stopped or self.ask is None:
                    raise self.undo(err, stopped)
                answer = self.answer(err)
                if answer == "y":
                    continue
                if answer == "n":
                    return self.keep()
                raise self.undo(err, None)
            appended = self.save()
            self.preview(entries, jobs, appended)
            return stopped or ExitStatus.OK

    def open_editor(self) -> Optional[int]:
        """Run the editor to its end; the exit status it calls for if it was
        stopped (Ctrl-c in the editor, SIGTERM or SIGHUP to Pegasus), else None."""
        ending = _Ending()
        restore = [s for s in _IGNORED if signal.getsignal(s) != signal.SIG_IGN]
        # The handlers come first: a Ctrl-c as the editor starts must not end Pegasus.
        handlers = {signal.SIGINT: signal.SIG_IGN, signal.SIGQUIT: signal.SIG_IGN,
                    signal.SIGTERM: ending, signal.SIGHUP: ending}
        with _handlers(handlers):
            status = self._run_editor(ending, restore)
        if ending.signum is not None:
            self.say(f"{signal.Signals(ending.signum).name}: ended the editor {self.given!r}; "
                     f"checking {self.path} before releasing the lock")
            return 128 + ending.signum
        if status:
            self.say(f"the editor {self.given!r} {_ending(status)}; checking "
                     f"{self.path} anyway")
        if status in (-signal.SIGINT, 128 + signal.SIGINT):
            return ExitStatus.INTERRUPTED
        return None

    def _run_editor(self, ending: "_Ending", restore) -> Optional[int]:
        """The editor's exit status (None if it was ended); its group always ends."""
        try:
            with editorproc.started(self.argv + [self.copy], restore) as editor:
                ending.waiting = True
                try:
                    if ending.signum is None:  # else it came while the editor started
                        return editor.wait()
                finally:
                    ending.waiting = False
        except _EndEditor:
            pass
        except OSError as err:
            raise UsageError(f"cannot start the editor {self.given!r} ({self.source}): "
                             f"{err.strerror}; give another with --editor or "
                             "$EDITOR") from None
        return None

    def answer(self, err: InputError) -> str:
        print(f"pegasus: {err.advising(None)}", file=sys.stderr, flush=True)
        while True:
            try:
                answer = self.ask(QUESTION).strip().lower()[:1] or "y"
            except (EOFError, KeyboardInterrupt):
                return "u"
            if answer in ("y", "n", "u"):
                return answer

    def save(self) -> bool:
        """The edited copy becomes the queue, and stays ahead of entries appended
        meanwhile (True if there were any). Nothing is written if it is unchanged."""
        edited, _ = snapshot(self.copy)
        if edited is None or edited == self.before:
            edited = self.before or b""  # still carries over appended entries
        appended = replace_edited(self.queue, edited, self.before)
        if appended is None:
            rejected = self.reject()
            raise EditRejected(f"{self.path} was changed while the editor was open by "
                               "something that did not take the lock, so your edit was "
                               f"not saved; it is in {rejected}: run 'pegasus l' again")
        return bool(appended)

    def keep(self) -> ExitStatus:
        self.save()
        self.say(f"kept {self.path} with the problem above: a running Pegasus stops "
                 "at that entry and reports it until it is fixed")
        return ExitStatus.BAD_INPUT

    def reject(self) -> str:
        """The edited copy as ``<queue>.rejected``; its path."""
        rejected = self.path + ".rejected"
        edited, _ = snapshot(self.copy)
        self.queue.write_atomic(rejected, edited or b"")
        return rejected

    def undo(self, err: InputError, stopped: Optional[int]) -> EditRejected:
        rejected = self.reject()
        status = stopped or ExitStatus.BAD_INPUT
        return EditRejected(f"{err.advising(None)}\n(the edit was undone: {self.path} is as "
                            f"it was before; the rejected version is in {rejected})",
                            status)

    def preview(self, entries: int, jobs: int, appended: bool) -> None:
        if self.note:
            self.say(self.note)
        self.say(f"{self.path}: {plural(entries, 'entry', 'entries')}, "
                 f"{plural(jobs, 'job')}")
        if appended:
            self.say(f"what was appended to {self.path} while the editor was open is "
                     "kept after your edit (not checked here)")


@contextmanager
def _workspace() -> Iterator[str]:
    """A private folder for the edited copy, removed at the end."""
    folder = tempfile.mkdtemp(prefix="pegasus-edit-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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


# ---------------------------------------------------------------- signals

class _Ending:
    """The SIGTERM/SIGHUP handler while the editor is open: which came first;
    raises _EndEditor to stop a wait for the editor."""

    def __init__(self):
        self.signum: Optional[int] = None
        self.waiting = False

    def __call__(self, signum, _frame) -> None:
        if self.signum is None:
            self.signum = signum
            if self.waiting:
                raise _EndEditor


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
