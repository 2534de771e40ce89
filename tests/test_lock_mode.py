"""Lock mode (``pegasus l``): scripted editors, the real CLI, concurrent Pegasus runs.

A run that only needs its exit status, output and files runs through
``cli.main`` in this process (``run_in_process``), its editor a child of this
process; the first test and those that signal, kill or run Pegasus alongside
others run the real command (``run_pegasus``, ``Running``).

Editors are small sh scripts written into ``tmp_path`` and given with
``--editor "sh /path/editor.sh"`` (or ``$EDITOR``, or a fake ``vim`` on
PATH). Editors that must stay open touch a flag file and wait for a release
file. Nothing waits with a fixed sleep: ``wait_for`` polls with a deadline.
"""

import fcntl
import os
import pty
import select
import shlex
import signal
import subprocess
import sys
import time
import uuid
from functools import partial

import pytest
import yaml

from pegasus import cli, lockmode
from pegasus.errors import ExitStatus, PegasusError, UsageError
from pegasus.output import Sink
from pegasus.queuefile import QueueFile

import helpers
from helpers import Running

WAITING = "waiting for the queue lock"

def lockstate(queue_path):
    """Editor lines: whether the queue lock is held, into lockstate.txt beside the lock."""
    lock = QueueFile(str(queue_path)).lock_path
    out = os.path.join(os.path.dirname(lock), "lockstate.txt")
    return (f'if flock -n {shlex.quote(lock)} true; then echo free; else echo held; fi'
            f' > {shlex.quote(out)}\n')


APPEND = 'printf -- "- echo added\\n" >> "$1"\n'
# Counts the editor's runs in ``count`` beside the script, and sets $n to the runs before.
COUNT = ('count="$(dirname "$0")/count"; n=$(cat "$count" 2>/dev/null || echo 0)\n'
         'echo $((n+1)) > "$count"\n')

wait_for = partial(helpers.wait_for, interval=0.02)  # this file polls every 20 ms


# ---------------------------------------------------------------- helpers

def lock_is_free(queue_path):
    """A non-blocking flock on the queue's sidecar lock succeeds right now."""
    fd = os.open(QueueFile(str(queue_path)).lock_path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def editor(folder, body, name="editor.sh"):
    """Write an sh script; return it as an --editor value."""
    path = folder / name
    path.write_text(body)
    return f"sh {shlex.quote(str(path))}"


def waiting_editor(folder, before="", name="editor.sh"):
    """An editor that runs ``before``, touches open.flag, waits for release.flag."""
    flag, release = folder / "open.flag", folder / "release.flag"
    body = (before + f"touch {shlex.quote(str(flag))}\n"
            f"while [ ! -e {shlex.quote(str(release))} ]; do sleep 0.02; done\n")
    return editor(folder, body, name), flag, release


def sink():
    """Lock mode's messages go to stdout, as Pegasus's do."""
    return Sink(sys.stdout.buffer, color=False, width=None)


def options(folder, *args):
    return cli.parse_args(["l", "-Q", str(folder / "queue.yaml"),
                           "-H", str(folder / "hosts.yaml"), *args])


def count_ids(path):
    text = path.read_text() if path.exists() else ""
    counts = {}
    for line in text.split():
        counts[line] = counts.get(line, 0) + 1
    return counts


def consumed_entries(folder):
    path = folder / "consumed.yaml"
    if not path.exists():
        return []
    return yaml.load(path.read_text(), Loader=yaml.BaseLoader) or []


@pytest.fixture
def running():
    started = []

    def start(args, cwd, env=None):
        started.append(Running(args, cwd, env))
        return started[-1]

    yield start
    for r in started:
        if r.proc.poll() is None:
            r.signal_group(signal.SIGKILL)
            r.proc.wait()


# ---------------------------------------------------------------- editing

def test_an_appended_entry_is_kept_previewed_and_the_lock_released(tmp_path, run_pegasus):
    original = "# my queue\n- echo one   # first\n"
    (tmp_path / "queue.yaml").write_text(original)
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    added = "- command: echo {{ x }} {{ hostname }}\n  x: [1, 2]\n"
    ed = editor(tmp_path, lockstate(tmp_path / "queue.yaml") +
                f"printf -- {shlex.quote(added)} >> \"$1\"\n")
    res = run_pegasus(["l", "--editor", ed], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines() == ["pegasus: queue.yaml: 2 entries, 3 jobs"]
    assert (tmp_path / "queue.yaml").read_text() == original + added
    assert (tmp_path / "lockstate.txt").read_text() == "held\n"
    assert lock_is_free(tmp_path / "queue.yaml")
    assert not (tmp_path / "queue.yaml.rejected").exists()


def test_a_missing_queue_file_is_created_by_the_editor(tmp_path, run_in_process):
    res = run_in_process(["l", "--editor", editor(tmp_path, APPEND)], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "pegasus: queue.yaml: 1 entry, 1 job" in res.stdout
    assert (tmp_path / "queue.yaml").read_text() == "- echo added\n"


@pytest.mark.parametrize("option, env, expected", [
    ("opt", "env", "opt"), (None, "env", "env"), (None, None, "vim"), (None, "", "vim")])
def test_editor_priority_is_option_then_environment_then_vim(tmp_path, monkeypatch, capsys,
                                                              option, env, expected):
    (tmp_path / "queue.yaml").write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("opt", "env", "vim"):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\necho {name} >> {tmp_path}/used.txt\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    if env is None:
        monkeypatch.delenv("EDITOR", raising=False)
    else:
        monkeypatch.setenv("EDITOR", env)
    args = ["--editor", option] if option else []
    assert lockmode.run(options(tmp_path, *args), sink()) == ExitStatus.OK
    assert (tmp_path / "used.txt").read_text() == expected + "\n"
    assert lock_is_free(tmp_path / "queue.yaml")


def test_an_editor_with_arguments_gets_them_before_the_queue_path(tmp_path, run_in_process):
    folder = tmp_path / "a folder"
    folder.mkdir()
    script = folder / "ed it.sh"
    script.write_text('for a in "$@"; do echo "$a"; done > "$(dirname "$0")/args.txt"\n')
    given = f"sh {shlex.quote(str(script))} --wait -c 'two words'"
    res = run_in_process(["l", "--editor", given], tmp_path, env={"EDITOR": "false"})
    assert res.returncode == 0, res.stderr
    args = (folder / "args.txt").read_text().splitlines()
    assert args[:3] == ["--wait", "-c", "two words"]
    # The editor gets a private copy named like the queue; lock mode saves it.
    assert os.path.basename(args[3]) == "queue.yaml" and args[3] != "queue.yaml"
    assert not os.path.exists(args[3])  # removed at the end


def test_editor_from_environment_with_arguments(tmp_path, run_in_process):
    ed = editor(tmp_path, 'echo "$1" > "$(dirname "$0")/args.txt"; ' + APPEND.replace("$1", "$2"))
    res = run_in_process(["l"], tmp_path, env={"EDITOR": ed + " --flag"})
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "args.txt").read_text() == "--flag\n"
    assert (tmp_path / "queue.yaml").read_text() == "- echo added\n"


def test_an_editor_that_saves_by_renaming_a_new_file_over_the_queue(tmp_path, run_in_process):
    queue = tmp_path / "queue.yaml"
    queue.write_text("- echo one\n")
    queue.chmod(0o600)
    inode = queue.stat().st_ino
    ed = editor(tmp_path, lockstate(queue) + 'cp "$1" "$1.swp" && printf -- "- echo two\\n" >> '
                          '"$1.swp" && mv "$1.swp" "$1"\n')
    res = run_in_process(["l", "--editor", ed], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "pegasus: queue.yaml: 2 entries, 2 jobs" in res.stdout
    assert queue.read_text() == "- echo one\n- echo two\n"
    assert queue.stat().st_ino != inode
    assert (tmp_path / "lockstate.txt").read_text() == "held\n"
    assert lock_is_free(queue)


def test_a_symlinked_queue_is_edited_at_its_target_and_stays_a_link(tmp_path, run_in_process):
    (tmp_path / "b").mkdir()
    target = tmp_path / "b" / "jobs.yaml"
    target.write_text("- echo one\n")
    link = tmp_path / "queue.yaml"
    os.symlink("b/jobs.yaml", str(link))
    ed = editor(tmp_path, lockstate(link) + 'cp "$1" "$1.swp" && printf -- "- echo two\\n" >> '
                          '"$1.swp" && mv "$1.swp" "$1"\n')  # saves by renaming over the file
    res = run_in_process(["l", "--editor", ed], tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"pegasus: {target}: 2 entries, 2 jobs" in res.stdout
    assert os.path.islink(str(link)) and target.read_text() == "- echo one\n- echo two\n"
    assert (tmp_path / "b" / "lockstate.txt").read_text() == "held\n"
    assert lock_is_free(target)


# ---------------------------------------------------------------- bad edits

ORIGINAL = "# the queue\n- echo one    # keep this spacing\n\n- command: echo {{ x }}\n  x: [a, b]\n"


@pytest.mark.parametrize("added, hosts, where, what", [
    ("- [unclosed\n", True, "queue.yaml:6", ""),  # the last line, where it is
    ("- bs: 8\n", False, "queue.yaml:6 (entry 3)", "no 'command' key"),
    ("- echo {{ nope }}\n", True, "queue.yaml:6 (entry 3)", "nope"),
], ids=["syntax", "no-command", "unknown-name"])
def test_a_bad_edit_without_a_terminal_is_undone(tmp_path, run_in_process, added, hosts,
                                                 where, what):
    queue = tmp_path / "queue.yaml"
    queue.write_text(ORIGINAL)
    queue.chmod(0o640)
    if hosts:
        (tmp_path / "hosts.yaml").write_text("- hostname: localhost\n  slot: [1, 2]\n")
    ed = editor(tmp_path, f"printf -- {shlex.quote(added)} >> \"$1\"\n")
    res = run_in_process(["l", "--editor", ed], tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    first = res.stderr.splitlines()[0]
    assert first.startswith(f"pegasus: {where}"), res.stderr
    assert what in first
    assert "queue.yaml.rejected" in res.stderr and "undone" in res.stderr
    assert "run again" not in res.stderr  # the edit is undone: nothing to fix and rerun
    assert queue.read_bytes() == ORIGINAL.encode()
    assert queue.stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "queue.yaml.rejected").read_text() == ORIGINAL + added
    assert "entries" not in res.stdout  # no preview
    assert lock_is_free(queue)


def test_a_queue_rewritten_without_the_lock_meanwhile_is_not_overwritten(tmp_path,
                                                                        run_in_process):
    queue = tmp_path / "queue.yaml"
    queue.write_text("- echo one\n- echo two\n")
    # While the editor is open, someone rewrites the queue without the lock.
    ed = editor(tmp_path, f"printf -- '- echo other\\n' > {shlex.quote(str(queue))}\n" + APPEND)
    res = run_in_process(["l", "--editor", ed], tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "changed while the editor was open by something that did not take the lock" \
        in res.stderr
    assert queue.read_text() == "- echo other\n"
    assert (tmp_path / "queue.yaml.rejected").read_text() == (
        "- echo one\n- echo two\n- echo added\n")


def test_without_a_hosts_file_templates_are_not_checked_and_that_is_said(tmp_path,
                                                                        run_in_process):
    ed = editor(tmp_path, 'printf -- "- echo {{ nope }}\\n" >> "$1"\n')
    res = run_in_process(["l", "--editor", ed], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "no hosts file at hosts.yaml: templates were not checked" in res.stdout
    assert "pegasus: queue.yaml: 1 entry, 1 job" in res.stdout


def test_a_bad_hosts_file_is_reported_and_templates_not_checked(tmp_path, run_in_process):
    (tmp_path / "hosts.yaml").write_text("- port: 22\n")
    res = run_in_process(["l", "--editor", editor(tmp_path, APPEND)], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "hosts.yaml:1 (entry 1)" in res.stdout and "hostname" in res.stdout
    assert "templates were not checked against hosts" in res.stdout


def read_until(fd, text, seen, timeout=30):
    """Read the pty master into ``seen`` (a list) until ``text`` shows up."""
    deadline = time.monotonic() + timeout
    while text not in b"".join(seen).decode(errors="replace"):
        assert time.monotonic() < deadline, f"no {text!r} in {b''.join(seen)!r}"
        if select.select([fd], [], [], 0.1)[0]:
            try:
                seen.append(os.read(fd, 4096))
            except OSError:  # EIO: the other side is closed
                break
    return b"".join(seen).decode(errors="replace")


def drain(fd, seen):
    """Read what is left on the pty master once the child has exited."""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: no process has the terminal open any more
            break
        if not chunk:
            break
        seen.append(chunk)
    return b"".join(seen).decode(errors="replace")


@pytest.mark.parametrize("answer", ["y", "n", "u"])
def test_a_bad_edit_on_a_terminal_asks_whether_to_reopen(tmp_path, answer):
    queue = tmp_path / "queue.yaml"
    queue.write_text("- echo one\n")
    # First run: an entry without command; second run: the fixed queue.
    ed = editor(tmp_path, COUNT + 'if [ "$n" = 0 ]; then printf -- "- bs: 8\\n" >> "$1";\n'
                          'else printf -- "- echo fixed\\n" > "$1"; fi\n')
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pegasus", "l", "--editor", ed],
                            cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    seen = []
    try:
        text = read_until(master, "Reopen the editor? [Y/n/u]", seen)
        assert "queue.yaml:2 (entry 2)" in text and "no 'command' key" in text
        assert "run again" not in text
        os.write(master, answer.encode() + b"\n")
        status = proc.wait(timeout=30)
        text = drain(master, seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    rejected = tmp_path / "queue.yaml.rejected"
    if answer == "y":
        assert status == 0, text
        assert queue.read_text() == "- echo fixed\n"
        assert "queue.yaml: 1 entry, 1 job" in text
        assert (tmp_path / "count").read_text() == "2\n"
    elif answer == "n":
        assert status == 2, text
        assert queue.read_text() == "- echo one\n- bs: 8\n"
        assert "kept queue.yaml" in text and not rejected.exists()
    else:
        assert status == 2, text
        assert queue.read_text() == "- echo one\n"
        assert rejected.read_text() == "- echo one\n- bs: 8\n"
    assert lock_is_free(queue)


def test_the_reopen_question_repeats_on_a_bad_answer_and_defaults_to_yes(tmp_path, capsys):
    (tmp_path / "queue.yaml").write_text("- echo one\n")
    ed = editor(tmp_path, 'n=$(cat "$1.count" 2>/dev/null || echo 0); echo $((n+1)) > "$1.count"\n'
                          'if [ "$n" -lt 2 ]; then printf -- "- [\\n" >> "$1";\n'
                          'else printf -- "- echo fixed\\n" > "$1"; fi\n')
    answers = iter(["what?\n", "\n", "YES\n"])
    asked = []

    def ask(question):
        asked.append(question)
        return next(answers)

    assert lockmode.edit(options(tmp_path, "--editor", ed), sink(), ask) == ExitStatus.OK
    assert asked == [lockmode.QUESTION] * 3
    assert (tmp_path / "queue.yaml").read_text() == "- echo fixed\n"
    assert lock_is_free(tmp_path / "queue.yaml")


def test_the_reopen_question_does_not_say_to_run_again(tmp_path, capsys):
    (tmp_path / "queue.yaml").write_text("- echo one\n")
    ed = editor(tmp_path, 'n=$(cat "$1.count" 2>/dev/null || echo 0); echo $((n+1)) > "$1.count"\n'
                          'if [ "$n" = 0 ]; then printf -- "- [\\n" >> "$1";\n'
                          'else printf -- "- echo fixed\\n" > "$1"; fi\n')
    assert lockmode.edit(options(tmp_path, "--editor", ed), sink(), lambda q: "y\n") == 0
    err = capsys.readouterr().err
    assert "queue.yaml:2 (entry 2): YAML syntax error: " in err, err
    assert "run again" not in err


def test_end_of_input_at_the_question_undoes_the_edit(tmp_path, capsys):
    (tmp_path / "queue.yaml").write_text("- echo one\n")
    ed = editor(tmp_path, 'printf -- "- [\\n" >> "$1"\n')

    def ask(question):
        raise EOFError

    with pytest.raises(PegasusError) as err:
        lockmode.edit(options(tmp_path, "--editor", ed), sink(), ask)
    assert err.value.exit_status == 2
    assert (tmp_path / "queue.yaml").read_text() == "- echo one\n"
    assert (tmp_path / "queue.yaml.rejected").read_text() == "- echo one\n- [\n"


# ---------------------------------------------------------------- how the editor ends

@pytest.mark.parametrize("added, status", [("- echo two\n", 0), ("- [\n", 2)])
def test_an_editor_failing_is_reported_and_the_file_still_checked(tmp_path, run_in_process,
                                                                 added, status):
    (tmp_path / "queue.yaml").write_text("- echo one\n")
    ed = editor(tmp_path, f"printf -- {shlex.quote(added)} >> \"$1\"; exit 3\n")
    res = run_in_process(["l", "--editor", ed], tmp_path)
    assert res.returncode == status, res.stdout + res.stderr
    assert "exited with status 3; checking queue.yaml anyway" in res.stdout
    if status == 0:
        assert "pegasus: queue.yaml: 2 entries, 2 jobs" in res.stdout
    else:
        assert (tmp_path / "queue.yaml").read_text() == "- echo one\n"
    assert lock_is_free(tmp_path / "queue.yaml")


@pytest.mark.parametrize("args, env, source", [
    (["--editor", "nvimx-nowhere"], {}, "--editor"),
    ([], {"EDITOR": "nvimx-nowhere -f"}, "$EDITOR")])
def test_an_editor_that_cannot_start_is_named(tmp_path, run_in_process, args, env, source):
    (tmp_path / "queue.yaml").write_text("- echo one\n")
    res = run_in_process(["l", *args], tmp_path, env=env)
    assert res.returncode == 2
    given = args[1] if args else env["EDITOR"]
    assert res.stderr.startswith(f"pegasus: cannot start the editor '{given}' ({source}): "
                                 "No such file or directory"), res.stderr
    assert (tmp_path / "queue.yaml").read_text() == "- echo one\n"
    assert lock_is_free(tmp_path / "queue.yaml")


def test_ctrl_c_just_as_the_editor_starts_does_not_end_lock_mode(tmp_path, monkeypatch):
    """Ctrl-c between the editor's start and the wait for it (a race a user can hit):
    Pegasus already ignores it, so it neither dies nor leaves the editor unwatched."""
    (tmp_path / "queue.yaml").write_text("- echo one\n")
    real_popen = subprocess.Popen

    def popen_then_ctrl_c(*args, **kwargs):
        child = real_popen(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # the moment the editor has started
        return child

    monkeypatch.setattr(subprocess, "Popen", popen_then_ctrl_c)
    ed = editor(tmp_path, APPEND)
    try:
        status = lockmode.edit(options(tmp_path, "--editor", ed), sink(), None)
    except KeyboardInterrupt:
        pytest.fail("a Ctrl-c as the editor started ended lock mode")
    assert status == ExitStatus.OK
    assert (tmp_path / "queue.yaml").read_text() == "- echo one\n- echo added\n"
    assert lock_is_free(tmp_path / "queue.yaml")


def test_an_unreadable_editor_command_is_a_usage_error(tmp_path, run_in_process):
    res = run_in_process(["l", "--editor", "vim 'unclosed"], tmp_path)
    assert res.returncode == 2
    assert "cannot read the editor command" in res.stderr


class OnTerminal:
    """``pegasus ARGS`` as the foreground job of a small shell on a pty (``jobshell``):
    keys typed on the pty reach the terminal's foreground group, as they do for a user."""

    def __init__(self, args, cwd):
        pid, fd = pty.fork()
        if pid == 0:  # the session leader: the pty is its controlling terminal
            try:
                os.chdir(str(cwd))
                os.environ["NO_COLOR"] = "1"  # plain messages to look for
                os.execv(sys.executable, [sys.executable, JOBSHELL, sys.executable, "-m",
                                          "pegasus", *args])
            finally:
                os._exit(127)
        self.pid, self.fd, self.seen = pid, fd, []

    def until(self, text):
        return read_until(self.fd, text, self.seen)

    def type(self, keys: bytes):
        os.write(self.fd, keys)

    def close(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)  # the shell; pegasus and the editor have
        except ProcessLookupError:             # groups of their own and end on their own
            pass
        os.waitpid(self.pid, 0)
        os.close(self.fd)


JOBSHELL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jobshell.py")


@pytest.fixture
def terminal():
    started = []

    def start(args, cwd):
        started.append(OnTerminal(args, cwd))
        return started[-1]

    yield start
    for t in started:
        t.close()


@pytest.mark.parametrize("added, kept", [("- echo two\n", True), ("- [\n", False)])
def test_ctrl_c_on_the_terminal_reaches_the_editor_and_the_lock_is_released(
        tmp_path, terminal, added, kept):
    queue = tmp_path / "queue.yaml"
    queue.write_text("- echo one\n")
    ed, flag, _ = waiting_editor(tmp_path, f"printf -- {shlex.quote(added)} >> \"$1\"\n")
    lock = terminal(["l", "--editor", ed], tmp_path)
    wait_for(flag.exists, what="the editor to open")
    assert not lock_is_free(queue)
    lock.type(b"\x03")  # Ctrl-c
    output = lock.until("[exit 130]")
    assert "was killed by SIGINT" in output
    if kept:
        assert queue.read_text() == "- echo one\n- echo two\n"
        assert "pegasus: queue.yaml: 2 entries, 2 jobs" in output
    else:
        assert queue.read_text() == "- echo one\n"
        assert "undone" in output
    assert lock_is_free(queue)


def test_the_editor_reads_the_keyboard(tmp_path, terminal):
    """The editor's own process group is the terminal's foreground while it runs
    (a background group reading the terminal would be stopped)."""
    queue = tmp_path / "queue.yaml"
    queue.write_text("- echo one\n")
    flag = tmp_path / "open.flag"
    ed = editor(tmp_path, f'touch {shlex.quote(str(flag))}\n'
                          'IFS= read -r line && printf "%s\\n" "$line" >> "$1"\n')
    lock = terminal(["l", "--editor", ed], tmp_path)
    wait_for(flag.exists, what="the editor to open")
    lock.type(b"- echo typed\n")
    output = lock.until("[exit 0]")
    assert "pegasus: queue.yaml: 2 entries, 2 jobs" in output
    assert queue.read_text() == "- echo one\n- echo typed\n"


def suspend_then_fg(lock, queue, flag, release):
    """Ctrl-z once the editor is open: lock mode stops (the queue still locked);
    ``fg``: the editor goes on, appends its entry, and the save goes through."""
    wait_for(flag.exists, what="the editor to open")
    lock.type(b"\x1a")  # Ctrl-z
    lock.until("[stopped]")  # the shell has its prompt back
    assert not lock_is_free(queue)
    release.touch()
    lock.type(b"fg\n")
    output = lock.until("[exit 0]")
    assert "pegasus: queue.yaml: 2 entries, 2 jobs" in output
    assert queue.read_text() == "- echo one\n- echo added\n"
    assert lock_is_free(queue)


def test_ctrl_z_in_the_editor_suspends_lock_mode_and_fg_continues_it(tmp_path, terminal):
    queue = tmp_path / "queue.yaml"
    queue.write_text("- echo one\n")
    ed, flag, release = waiting_editor(tmp_path)
    with open(ed.split()[1], "a") as f:
        f.write(APPEND)
    suspend_then_fg(terminal(["l", "--editor", ed], tmp_path), queue, flag, release)


def test_ctrl_z_that_stops_only_the_editors_child_still_suspends_lock_mode(tmp_path, terminal):
    """A wrapper that ignores Ctrl-z (or is busy starting its child as it comes)
    does not stop, its child the editor does: lock mode still sees its editor
    stopped, suspends, and ``fg`` continues the editor."""
    queue = tmp_path / "queue.yaml"
    queue.write_text("- echo one\n")
    flag, release = tmp_path / "open.flag", tmp_path / "release.flag"
    child = ("import os, signal, time; signal.signal(signal.SIGTSTP, signal.SIG_DFL); "
             f"open({str(flag)!r}, 'w').close()\n"
             f"while not os.path.exists({str(release)!r}): time.sleep(0.02)")
    ed = editor(tmp_path, "trap '' TSTP\n" + APPEND +
                f"{shlex.quote(sys.executable)} -c {shlex.quote(child)}\n")
    # Ctrl-z: the wrapper ignores it, its child stops
    suspend_then_fg(terminal(["l", "--editor", ed], tmp_path), queue, flag, release)


# ---------------------------------------------------------------- running Pegasus

def test_a_daemon_takes_nothing_while_the_editor_is_open(tmp_path, running):
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    ids = tmp_path / "ids.txt"
    (tmp_path / "queue.yaml").write_text(f"- echo seed >> {ids}\n")
    daemon = running(["q", "--daemon"], tmp_path)
    wait_for(lambda: count_ids(ids) == {"seed": 1}, what="the seed job")
    added = "".join(f"- echo new{i} >> {ids}\n" for i in (1, 2))
    ed, flag, release = waiting_editor(tmp_path, f"printf -- {shlex.quote(added)} >> \"$1\"\n")
    lock = running(["l", "--editor", ed], tmp_path)
    wait_for(flag.exists, what="the editor to open")
    # An entry appended meanwhile (`>>`, no lock): the daemon sees it and tries to take it.
    queue_append(tmp_path / "queue.yaml", f"- echo new0 >> {ids}\n")
    wait_for(lambda: WAITING in daemon.output, what="the daemon to wait for the lock")
    assert len(consumed_entries(tmp_path)) == 1
    assert count_ids(ids) == {"seed": 1}
    assert "new0" not in daemon.output
    release.touch()
    assert lock.finish() == 0, lock.output
    assert "pegasus: queue.yaml: 2 entries, 2 jobs" in lock.output
    assert "appended to queue.yaml while the editor was open" in lock.output
    expected = {"seed": 1, "new1": 1, "new2": 1, "new0": 1}
    wait_for(lambda: count_ids(ids) == expected, what="new jobs")
    wait_for(lambda: len(consumed_entries(tmp_path)) == 4, what="consumed.yaml")
    daemon.signal_group(signal.SIGINT)
    assert daemon.finish() == 130, daemon.output
    assert daemon.output.count(WAITING) == 1


def test_a_job_failing_while_the_editor_is_open_does_not_hold_the_run(tmp_path, running):
    """failed.yaml and interrupted.yaml have a lock of their own: a job that fails
    while lock mode holds the queue is recorded at once, and the run still
    answers SIGTERM. Before, the loop waited for the queue lock to record the
    failure, and a SIGTERM was not acted on until the editor closed."""
    (tmp_path / "hosts.yaml").write_text("- hostname: localhost\n  slot: [a, b]\n")
    go = tmp_path / "go"
    (tmp_path / "queue.yaml").write_text(
        f"- while [ ! -e {go} ]; do sleep 0.02; done; exit 3\n- sleep 300\n")
    run = running(["q"], tmp_path)
    wait_for(lambda: run.output.count("=== run") == 2, what="both jobs to start")
    ed, flag, release = waiting_editor(tmp_path)
    lock = running(["l", "--editor", ed], tmp_path)
    wait_for(flag.exists, what="the editor to open")
    go.touch()
    wait_for(lambda: "exit 3" in (tmp_path / "failed.yaml").read_text()
             if (tmp_path / "failed.yaml").exists() else False,
             what="the failure recorded in failed.yaml")
    run.signal_group(signal.SIGTERM)
    assert run.finish() == 143, run.output
    assert not lock_is_free(tmp_path / "queue.yaml")  # the editor still open all along
    release.touch()
    assert lock.finish() == 0, lock.output
    failed = (tmp_path / "failed.yaml").read_text()
    assert "exit 3" in failed and "sleep 300" in failed, failed


def test_entries_taken_just_before_the_lock_are_not_written_back(tmp_path, running):
    (tmp_path / "hosts.yaml").write_text("- hostname: localhost\n  slot: [a, b]\n")
    ids = tmp_path / "ids.txt"
    seeds = [f"s{i}" for i in range(12)]
    (tmp_path / "queue.yaml").write_text(
        "".join(f"- sleep 0.05; echo {s} >> {ids}\n" for s in seeds))
    daemon = running(["q", "--daemon"], tmp_path)
    wait_for(lambda: count_ids(ids), what="the first job")
    for round_ in range(3):  # edit while the daemon is taking entries
        ed, flag, release = waiting_editor(
            tmp_path, f"printf -- '- echo e{round_} >> {ids}\\n' >> \"$1\"\n", f"ed{round_}.sh")
        lock = running(["l", "--editor", ed], tmp_path)
        wait_for(flag.exists, what="the editor to open")
        release.touch()
        assert lock.finish() == 0, lock.output
    expected = {s: 1 for s in seeds + ["e0", "e1", "e2"]}
    wait_for(lambda: count_ids(ids) == expected, what=f"every job once: {count_ids(ids)}")
    assert yaml.safe_load((tmp_path / "queue.yaml").read_text()) in (None, [])
    daemon.signal_group(signal.SIGINT)
    assert daemon.finish() == 130
    assert count_ids(ids) == expected
    assert len(consumed_entries(tmp_path)) == len(expected)


@pytest.mark.slow
def test_a_daemon_on_the_ssh_cluster_takes_nothing_while_the_editor_is_open(
        tmp_path, running, cluster):
    node = cluster.aliases[0]
    marker = f"/tmp/pegasus-lock-{uuid.uuid4().hex}"
    (tmp_path / "hosts.yaml").write_text(f"- hostname: {node}\n  slot: [a, b]\n")
    (tmp_path / "queue.yaml").write_text(f"- echo seed >> {marker}\n")

    def ids():
        res = cluster.ssh(node, f"cat {marker} 2>/dev/null; true")
        assert res.returncode == 0, res.stderr
        return count_ids_text(res.stdout)

    daemon = running(["q", "--daemon", "--ssh-config", cluster.ssh_config], tmp_path)
    try:
        wait_for(lambda: ids() == {"seed": 1}, what="the seed job")
        added = "".join(f"- echo new{i} from {{{{ slot }}}} >> {marker}\n" for i in (1, 2, 3))
        ed, flag, release = waiting_editor(tmp_path,
                                           f"printf -- {shlex.quote(added)} >> \"$1\"\n")
        lock = running(["l", "--editor", ed], tmp_path)
        wait_for(flag.exists, what="the editor to open")
        # The editor edits a private copy: an append to queue.yaml itself is
        # what makes the daemon try to take, and it must wait for the lock.
        with open(tmp_path / "queue.yaml", "a") as f:
            f.write(f"- echo late >> {marker}\n")
        wait_for(lambda: WAITING in daemon.output, what="the daemon to wait for the lock")
        assert len(consumed_entries(tmp_path)) == 1
        assert ids() == {"seed": 1}
        assert daemon.output.count("=== run") == 1
        release.touch()
        assert lock.finish() == 0, lock.output
        assert "pegasus: queue.yaml: 3 entries, 3 jobs" in lock.output
        wait_for(lambda: len(ids()) == 5 and len(consumed_entries(tmp_path)) == 5,
                 what="the new entries to run")
        assert sorted(k for k in ids() if k != "seed") == ["late", "new1", "new2", "new3"]
        daemon.signal_group(signal.SIGINT)
        assert daemon.finish() == 130, daemon.output
        assert daemon.output.count("=== run") == 5
    finally:
        cluster.ssh(node, f"rm -f {marker}")


def count_ids_text(text):
    """{first word of a line: count}."""
    counts = {}
    for line in text.splitlines():
        key = line.split()[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_two_queue_runs_share_one_queue_and_run_every_entry_once(tmp_path, running):
    (tmp_path / "hosts.yaml").write_text("- hostname: localhost\n  slot: [a, b]\n")
    ids = tmp_path / "ids.txt"
    (tmp_path / "queue.yaml").write_text(
        "".join(f"- echo id{i} >> {ids}\n" for i in range(60)))
    first = running(["q"], tmp_path)
    second = running(["q"], tmp_path)
    assert first.finish() == 0, first.output
    assert second.finish() == 0, second.output
    assert count_ids(ids) == {f"id{i}": 1 for i in range(60)}
    assert len(consumed_entries(tmp_path)) == 60
    assert first.output.count("=== run") + second.output.count("=== run") == 60


def process_gone(pid):
    """``pid`` has exited (or is a zombie nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


@pytest.mark.slow  # 3 s or more
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP],
                         ids=["kill-9", "sigterm", "sighup"])
def test_lock_mode_ended_with_its_editor_open_never_lets_the_editor_write_back(
        tmp_path, running, sig):
    """The editor dies with lock mode: its save (of the queue as locked) would run
    every entry a daemon took meanwhile a second time."""
    (tmp_path / "hosts.yaml").write_text("- hostname: localhost\n  slot: [a, b]\n")
    ids = tmp_path / "ids.txt"
    expected = {f"id{i}": 1 for i in range(12)}
    (tmp_path / "queue.yaml").write_text("".join(f"- echo {i} >> {ids}\n" for i in expected))
    pid_file, written = tmp_path / "editor.pid", tmp_path / "written.flag"
    ed, flag, release = waiting_editor(tmp_path, (
        f'echo $$ > {shlex.quote(str(pid_file))}\n'
        f'cp "$1" {shlex.quote(str(tmp_path / "as-locked.yaml"))}\n'))
    with open(ed.split()[1], "a") as f:  # the user's save, once released
        f.write(f'cp {shlex.quote(str(tmp_path / "as-locked.yaml"))} "$1"\n'
                f'touch {shlex.quote(str(written))}\n')
    lock = running(["l", "--editor", ed], tmp_path)
    daemon = None
    try:
        wait_for(flag.exists, what="the editor to open")
        editor_pid = int(pid_file.read_text())
        daemon = running(["q", "--daemon"], tmp_path)
        wait_for(lambda: WAITING in daemon.output, what="the daemon to wait for the lock")
        os.kill(lock.proc.pid, sig)  # lock mode only, not its process group
        wait_for(lambda: process_gone(editor_pid), timeout=10, what="the editor to end")
        status = lock.finish(timeout=30)
        wait_for(lambda: count_ids(ids) == expected, what=f"every job once: {count_ids(ids)}")
    finally:
        release.touch()  # an editor still alive would now write the locked queue back
    assert not written.exists()
    assert yaml.safe_load((tmp_path / "queue.yaml").read_text()) in (None, [])
    daemon.signal_group(signal.SIGINT)
    assert daemon.finish() == 130, daemon.output
    assert count_ids(ids) == expected
    if sig != signal.SIGKILL:
        name = signal.Signals(sig).name
        assert status == 128 + sig, lock.output
        assert f"pegasus: {name}: ended the editor " in lock.output, lock.output
        assert "pegasus: queue.yaml: 12 entries, 12 jobs" in lock.output


def test_lock_mode_ended_by_sigterm_undoes_an_invalid_edit(tmp_path, running):
    queue = tmp_path / "queue.yaml"
    queue.write_text("- echo one\n")
    ed, flag, release = waiting_editor(tmp_path, 'printf -- "- [\\n" >> "$1"\n')
    lock = running(["l", "--editor", ed], tmp_path)
    try:
        wait_for(flag.exists, what="the editor to open")
        lock.proc.send_signal(signal.SIGTERM)
        assert lock.finish() == 143, lock.output
    finally:
        release.touch()
    assert queue.read_text() == "- echo one\n"
    assert "the edit was undone" in lock.output
    assert lock_is_free(queue)


# ---------------------------------------------------------------- the lock itself

def test_no_stale_lock_after_kill_9_of_lock_mode(tmp_path, running, run_pegasus):
    queue = tmp_path / "queue.yaml"
    queue.write_text("- echo one\n")
    ed, flag, release = waiting_editor(tmp_path)
    lock = running(["l", "--editor", ed], tmp_path)
    try:
        wait_for(flag.exists, what="the editor to open")
        assert not lock_is_free(queue)
        os.kill(lock.proc.pid, signal.SIGKILL)  # the editor gets SIGTERM
        lock.proc.wait(timeout=30)
        assert lock_is_free(queue)
        res = run_pegasus(["l", "--editor", editor(tmp_path, APPEND, "append.sh")], tmp_path,
                          timeout=20)
        assert res.returncode == 0, res.stderr
        assert WAITING not in res.stdout
        assert queue.read_text() == "- echo one\n- echo added\n"
    finally:
        release.touch()  # the orphaned editor exits and closes the output pipe
    lock.finish()


def test_no_stale_lock_after_kill_9_of_queue_mode(tmp_path, running, run_pegasus):
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    ids = tmp_path / "ids.txt"
    (tmp_path / "queue.yaml").write_text(
        "".join(f"- echo id{i} >> {ids}\n" for i in range(200)))
    daemon = running(["q", "--daemon"], tmp_path)
    wait_for(lambda: len(count_ids(ids)) >= 3, what="some jobs")
    daemon.signal_group(signal.SIGKILL)  # most likely while it takes or writes
    daemon.finish()
    res = run_pegasus(["l", "--editor", editor(tmp_path, APPEND)], tmp_path, timeout=20)
    assert res.returncode == 0, res.stderr
    assert WAITING not in res.stdout
    assert lock_is_free(tmp_path / "queue.yaml")
    left = yaml.safe_load((tmp_path / "queue.yaml").read_text())
    assert left[-1] == "echo added"


def test_a_blocked_queue_run_says_once_that_it_waits_for_the_lock(tmp_path, running):
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    queue = tmp_path / "queue.yaml"
    queue.write_text(f"- echo ran > {tmp_path}/ran.txt\n")
    ed, flag, release = waiting_editor(tmp_path)
    lock = running(["l", "--editor", ed], tmp_path)
    wait_for(flag.exists, what="the editor to open")
    run = running(["q"], tmp_path)
    wait_for(lambda: WAITING in run.output, what="the waiting message")
    assert QueueFile(str(queue)).lock_path in run.output
    assert not (tmp_path / "ran.txt").exists()
    release.touch()
    assert lock.finish() == 0
    assert run.finish() == 0, run.output
    assert (tmp_path / "ran.txt").read_text() == "ran\n"
    assert run.output.count(WAITING) == 1


def test_a_blocked_lock_mode_says_once_that_it_waits_for_the_lock(tmp_path, running):
    queue = tmp_path / "queue.yaml"
    queue.write_text("- echo one\n")
    fd = os.open(QueueFile(str(queue)).lock_path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        lock = running(["l", "--editor", editor(tmp_path, APPEND)], tmp_path)
        wait_for(lambda: WAITING in lock.output, what="the waiting message")
        assert queue.read_text() == "- echo one\n"  # the editor has not run
    finally:
        os.close(fd)
    assert lock.finish() == 0, lock.output
    line = [l for l in lock.output.splitlines() if WAITING in l]
    assert line == [f"pegasus: {WAITING} {QueueFile(str(queue)).lock_path} (another "
                    "Pegasus is taking entries or someone is editing the queue)"]
    assert queue.read_text() == "- echo one\n- echo added\n"


def test_editor_command_parsing():
    assert lockmode.editor_command("code --wait", {"EDITOR": "nano"}) == (
        ["code", "--wait"], "code --wait", "--editor")
    assert lockmode.editor_command(None, {"EDITOR": "nano -w"})[0] == ["nano", "-w"]
    assert lockmode.editor_command(None, {"EDITOR": "  "})[0] == ["vim"]
    assert lockmode.editor_command(None, {})[2] == "the default"
    for bad in ("vim 'unclosed", "'' -f"):
        with pytest.raises(UsageError, match="cannot read the editor command"):
            lockmode.editor_command(bad, {})


def wrapper_editor(folder):
    """An $EDITOR that is a shell script running the real "editor" as its child.

    The child records its pid and the queue it was given, touches open.flag,
    waits for release.flag, then "saves" the queue as it was when it opened
    and touches written.flag. Returns (the wrapper's path, flag, release, child pid file).
    """
    q = lambda p: shlex.quote(str(folder / p))  # noqa: E731
    child = folder / "real-editor.sh"
    child.write_text(f'echo $$ > {q("editor.pid")}\ncp "$1" {q("as-locked.yaml")}\n'
                     f'touch {q("open.flag")}\n'
                     f'while [ ! -e {q("release.flag")} ]; do sleep 0.02; done\n'
                     f'cp {q("as-locked.yaml")} "$1"\ntouch {q("written.flag")}\n')
    wrapper = folder / "my-editor"
    wrapper.write_text(f'#!/bin/sh\nsh {shlex.quote(str(child))} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper), folder / "open.flag", folder / "release.flag", folder / "editor.pid"


@pytest.mark.slow  # 3 s or more
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
                         ids=["sigterm", "sighup", "kill-9"])
def test_a_wrapper_editor_left_open_by_a_killed_lock_mode_never_runs_an_entry_twice(
        tmp_path, running, sig):
    """The real editor is the wrapper's child: signals to lock mode's editor
    process alone never reach it, and after ``kill -9`` nothing can signal it."""
    (tmp_path / "hosts.yaml").write_text("- hostname: localhost\n  slot: [a, b]\n")
    ids = tmp_path / "ids.txt"
    expected = {f"id{i}": 1 for i in range(12)}
    queue = tmp_path / "queue.yaml"
    queue.write_text("".join(f"- echo {i} >> {ids}\n" for i in expected))
    ed, flag, release, pid_file = wrapper_editor(tmp_path)
    lock = running(["l"], tmp_path, env={"EDITOR": ed})
    daemon = None
    try:
        wait_for(flag.exists, what="the editor to open")
        editor_pid = int(pid_file.read_text())
        daemon = running(["q", "--daemon"], tmp_path)
        wait_for(lambda: WAITING in daemon.output, what="the daemon to wait for the lock")
        os.kill(lock.proc.pid, sig)  # lock mode only, as `kill` does
        lock.proc.wait(timeout=30)
        wait_for(lambda: count_ids(ids) == expected, what=f"every job once: {count_ids(ids)}")
    finally:
        release.touch()  # the user saves, if the editor is still open
    wait_for(lambda: (tmp_path / "written.flag").exists() or process_gone(editor_pid),
             what="the editor to save or end")
    status = lock.finish()  # its output pipe: the editor may have held it until now
    # A sentinel appended after the save runs after anything the save put back.
    queue_append(queue, f"- echo sentinel >> {ids}\n")
    wait_for(lambda: "sentinel" in count_ids(ids), what="the sentinel job")
    daemon.signal_group(signal.SIGINT)
    assert daemon.finish() == 130, daemon.output
    assert count_ids(ids) == dict(expected, sentinel=1)
    assert yaml.safe_load(queue.read_text()) in (None, [])
    if sig != signal.SIGKILL:
        assert status == 128 + sig, lock.output
        assert process_gone(editor_pid)  # the whole editor ended with lock mode


def queue_append(queue, text):
    with open(queue, "a") as f:
        f.write(text)
