"""Only whole entries are taken: an append without the lock may be half-way.

``printf -- '- comm' >> queue.yaml; printf 'and\\n' >> queue.yaml`` and an
entry written line by line leave the file's last entry half-written for a
moment, and no text shows it. An entry is whole when another entry follows it,
and the last one when the file is at rest: as Pegasus read it at start or left
it after its own rewrite, or not written for ``atrest.QUIET`` seconds. These
tests set QUIET to an hour and date the file's last write themselves
(``os.utime``), so no test waits for a clock.
"""

import os
import types

import pytest

from fakes import FakeJob, backdate, append, ctrl_c, run_loop, when_pending, when_queue_empty
from fakes import deferred, when_bad_entry, when_started
from helpers import queue_entries, run_in_process, write
from pegasus import atrest
from pegasus.errors import InputError
from pegasus.queuefile import QueueFile
from pegasus.records import Records

HOUR = 3600.0


@pytest.fixture(autouse=True)
def _an_hour_of_quiet(monkeypatch):
    monkeypatch.setattr(atrest, "QUIET", HOUR)


def ok(job):
    return None


def queue_at(tmp_path, text, age=0.0):
    """queue.yaml holding ``text``, last written ``age`` seconds ago."""
    path = tmp_path / "queue.yaml"
    path.write_text(text)
    if age:
        date(path, age)
    return QueueFile(str(path)), path


def date(path, age):
    st = os.stat(str(path))
    os.utime(str(path), ns=(st.st_atime_ns, st.st_mtime_ns - int(age * 1e9)))


def take(queue, n=1, check=ok):
    return Records(queue).take([f"[n{i}]" for i in range(n)], check)


def commands(taken):
    return [job.command for job in taken.jobs]


# ---------------------------------------------------------------- a take

def test_a_last_line_written_in_two_appends_is_never_taken_half_written(tmp_path):
    queue, path = queue_at(tmp_path, "- echo a\n")
    with open(str(path), "a") as f:
        f.write("- comm")  # printf -- '- comm' >> queue.yaml
    taken = take(queue, 2)
    assert commands(taken) == ["echo a"]  # followed by another entry: whole
    assert taken.pending and taken.error is None
    assert path.read_text() == "- comm"
    with open(str(path), "a") as f:
        f.write("and\n")  # printf 'and\n' >> queue.yaml
    assert commands(take(queue, 2)) == []  # still just written
    date(path, 2 * HOUR)
    assert commands(take(queue, 2)) == ["command"]
    assert path.read_text() == ""


def test_an_entry_written_line_by_line_waits_for_its_last_line(tmp_path):
    """Each line ends with a newline, and YAML lets the next one continue the
    entry: the first line alone must not run (here it names no value yet)."""
    queue, path = queue_at(tmp_path, "- command: echo {{ x }}\n")
    taken = take(queue)
    assert commands(taken) == [] and taken.pending and taken.error is None
    with open(str(path), "a") as f:
        f.write("  x: '1'\n")
    date(path, 2 * HOUR)
    taken = take(queue)
    assert [(j.command, j.params) for j in taken.jobs] == [("echo {{ x }}", (("x", "1"),))]


def test_a_block_scalar_written_line_by_line_is_not_cut_short(tmp_path):
    queue, path = queue_at(tmp_path, "- |\n  cd /data\n")
    assert commands(take(queue)) == []
    with open(str(path), "a") as f:
        f.write("  ls\n- echo next\n")  # the next entry begins: the first is whole
    assert commands(take(queue, 2)) == ["cd /data\nls\n"]


def test_a_half_written_entry_that_does_not_parse_yet_is_no_error(tmp_path):
    queue, path = queue_at(tmp_path, "- echo a\n- \"echo b")
    taken = take(queue, 2)
    assert commands(taken) == ["echo a"] and taken.pending and taken.error is None
    taken = take(queue, 2)
    assert commands(taken) == [] and taken.pending
    date(path, 2 * HOUR)  # nobody finished it: now it is an error
    with pytest.raises(InputError, match="entry 1"):
        take(queue, 2)
    assert path.read_text() == "- \"echo b"


def test_a_file_at_rest_gives_its_last_line_without_a_newline(tmp_path):
    """An editor that writes no newline at the end."""
    queue, path = queue_at(tmp_path, "- echo hi", age=2 * HOUR)
    assert commands(take(queue)) == ["echo hi"]


def test_the_file_as_read_at_start_is_whole(tmp_path):
    """``printf -- '- echo hi' > queue.yaml; pegasus q``: read whole at start."""
    queue, path = queue_at(tmp_path, "- echo a\n- echo hi")
    queue.check_all(ok)
    assert commands(take(queue)) == ["echo a"]
    assert commands(take(queue)) == ["echo hi"]  # Pegasus's own rewrite: still whole


def test_an_append_after_the_start_is_not_whole(tmp_path):
    queue, path = queue_at(tmp_path, "- echo a\n")
    queue.check_all(ok)
    with open(str(path), "a") as f:
        f.write("- echo b")
    taken = take(queue, 2)
    assert commands(taken) == ["echo a"] and taken.pending


def test_a_rewrite_keeps_the_time_of_the_last_write(tmp_path):
    queue, path = queue_at(tmp_path, "- echo a\n- echo b\n", age=2 * HOUR)
    before = os.stat(str(path)).st_mtime_ns
    assert commands(take(queue)) == ["echo a"]
    assert os.stat(str(path)).st_mtime_ns == before
    assert commands(take(QueueFile(str(path)))) == ["echo b"]  # another Pegasus too


def test_a_file_dated_in_the_future_rests_once_unchanged_for_quiet_seconds(tmp_path,
                                                                           monkeypatch):
    """A file server's clock ahead of ours: Pegasus's own clock decides."""
    clock = {"now": 1000.0}
    monkeypatch.setattr(atrest, "time", types.SimpleNamespace(
        time=lambda: 0.0, monotonic=lambda: clock["now"]))
    queue, path = queue_at(tmp_path, "- echo a\n")
    assert commands(take(queue)) == []
    clock["now"] += HOUR / 2
    assert commands(take(queue)) == []
    with open(str(path), "a") as f:
        f.write("- echo b\n- echo c\n")  # changed: the quiet starts again
    clock["now"] += HOUR / 2
    assert commands(take(queue, 3)) == ["echo a", "echo b"]
    clock["now"] += HOUR / 2
    assert commands(take(queue, 3)) == []  # Pegasus's own rewrite changed nothing
    clock["now"] += HOUR / 2
    assert commands(take(queue, 3)) == ["echo c"]


# ---------------------------------------------------------------- the loop

def test_the_daemon_runs_an_entry_appended_in_two_writes_once_whole(tmp_path):
    out = run_loop(tmp_path, daemon=True, quiet=HOUR, actions=[
        when_queue_empty(append("- comm")),
        when_pending(append("and\n")),
        when_pending(backdate(), nth=2),
        when_started("command", ctrl_c)])
    assert [job.command for job in out.jobs] == ["command"]
    assert out.consumed == [{"command": "command"}] and out.queue == []


def test_queue_mode_waits_for_its_last_entry_to_rest_then_runs_it(tmp_path):
    out = run_loop(tmp_path, queue="- echo a\n- echo b", quiet=HOUR,
                   scripts={"echo a": FakeJob()}, actions=[when_pending(backdate())])
    assert out.status == 0, out.output
    assert [job.command for job in out.jobs] == ["echo a", "echo b"]


def test_a_pending_entry_keeps_a_daemon_at_a_bad_entry_quiet(tmp_path):
    """A bad head said once, not again each time a take finds the file unsettled."""
    out = run_loop(tmp_path, daemon=True, quiet=HOUR, queue="- echo {{ nope }}\n",
                   actions=[when_pending(backdate()),
                            when_bad_entry(deferred(append("# still looking at it\n"))),
                            when_pending(backdate(), nth=2),
                            when_bad_entry(ctrl_c, nth=2)])
    assert sum("unknown name 'nope'" in m for m in out.messages) == 1, out.output


# ---------------------------------------------------------------- the command

def test_pegasus_runs_a_queue_without_a_final_newline_at_once(tmp_path, monkeypatch):
    """The real default (1 s of quiet), a file just written: read whole at start."""
    monkeypatch.undo()
    write(tmp_path / "hosts.yaml", "- localhost\n")
    write(tmp_path / "queue.yaml", "- echo a\n- echo hi")
    res = run_in_process(["q"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[localhost] hi" in res.stdout.splitlines()
    assert queue_entries(tmp_path / "queue.yaml") == []
