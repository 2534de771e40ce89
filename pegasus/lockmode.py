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
  editor was ended by Ctrl-c (killed by SIGINT or exit status 130): the file
  is still checked, and kept if valid, undone if not.
"""

from __future__ import annotations

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

Ask = Callable[[str], str]  # shows a question, returns the answer typed
QUESTION = "Reopen the editor? [Y/n/u] "


class EditRejected(PegasusError):
    """The edited queue was bad and has been undone."""

    def __init__(self, message: str, exit_status: int = ExitStatus.BAD_INPUT):
        super().__init__(message)
        self.exit_status = exit_status


def run(opts: Options, sink: Sink) -> ExitStatus:
    return edit(opts, sink, _ask_terminal if _stdin_is_terminal() else None)


def edit(opts: Options, sink: Sink, ask: Optional[Ask]) -> ExitStatus:
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

    def loop(self) -> ExitStatus:
        while True:
            interrupted = self.open_editor()
            try:
                entries, jobs = self.queue.check_all(self.check, lock=False)
            except InputError as err:
                if interrupted or self.ask is None:
                    raise self.undo(err, interrupted)
                answer = self.answer(err)
                if answer == "y":
                    continue
                if answer == "n":
                    return self.keep()
                raise self.undo(err, False)
            self.preview(entries, jobs)
            return ExitStatus.INTERRUPTED if interrupted else ExitStatus.OK

    def open_editor(self) -> bool:
        """Run the editor to its end; True if it was ended by Ctrl-c."""
        try:
            child = subprocess.Popen(self.argv + [self.path])
        except OSError as err:
            raise UsageError(f"cannot start the editor {self.given!r} ({self.source}): "
                             f"{err.strerror}; give another with --editor or "
                             "$EDITOR") from None
        with _signals_ignored():
            status = child.wait()
        interrupted = status in (-signal.SIGINT, 128 + signal.SIGINT)
        if status:
            self.say(f"the editor {self.given!r} {_ending(status)}; checking "
                 f"{self.path} anyway")
        return interrupted

    def answer(self, err: InputError) -> str:
        print(f"pegasus: {err}", file=sys.stderr, flush=True)
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

    def undo(self, err: InputError, interrupted: bool) -> EditRejected:
        rejected = _undo_edit(self.queue, self.before, self.mode)
        status = ExitStatus.INTERRUPTED if interrupted else ExitStatus.BAD_INPUT
        return EditRejected(f"{err}\n(the edit was undone: {self.path} is back as it "
                            f"was before; the rejected version is in {rejected})",
                            status)

    def preview(self, entries: int, jobs: int) -> None:
        if self.note:
            self.say(self.note)
        self.say(f"{self.path}: {_plural(entries, 'entry', 'entries')}, "
             f"{_plural(jobs, 'job', 'jobs')}")


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


# ---------------------------------------------------------------- terminal

@contextmanager
def _signals_ignored() -> Iterator[None]:
    """Ctrl-c and Ctrl-\\ go to the editor only (Pegasus ignores them)."""
    saved = {sig: signal.signal(sig, signal.SIG_IGN)
             for sig in (signal.SIGINT, signal.SIGQUIT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


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


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"
