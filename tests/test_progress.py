"""The progress line (issue 12): at the bottom of a terminal, redrawn, never in a
job line, never in a pipe."""

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import tty

import gevent

from helpers import run_in_process, wait_for

from pegasus import outlet
from pegasus.outlet import ERASE, Outlet
from pegasus.progress import Counts, clock, line

STATUS = re.compile(r"^pegasus: \d+ done, \d+ running, \d+ queued, (\d+ failed, )?"
                    r"\d+:\d\d elapsed(, about \d+:\d\d left)?$")


def test_the_line_counts_jobs_and_estimates_the_time_left_from_the_jobs_done():
    assert line(Counts(0, 2, 8, 0), 3.5) == \
        "pegasus: 0 done, 2 running, 8 queued, 0:03 elapsed"  # nothing done: no estimate
    assert line(Counts(4, 2, 6, 1), 60) == \
        "pegasus: 4 done, 2 running, 6 queued, 1 failed, 1:00 elapsed, about 2:00 left"
    assert line(Counts(10, 0, 0, 0), 75) == "pegasus: 10 done, 0 running, 0 queued, 1:15 elapsed"


def test_broadcast_counts_steps():
    assert line(Counts(2, 3, 4, 1, steps=True), 20) == (
        "pegasus: step 3 running on 3 sub-nodes, 2 steps done, 4 queued, 1 with failures, "
        "0:20 elapsed, about 0:50 left")
    assert line(Counts(1, 0, 0, 0, steps=True), 5).startswith("pegasus: no step running, 1 step")


def test_clock():
    assert [clock(s) for s in (0, 7.9, 754, 3723, 2 * 86400 + 5)] == \
        ["0:00", "0:07", "12:34", "1:02:03", "2d 0:00:05"]


def test_the_outlet_erases_the_line_before_output_and_draws_it_again_after():
    out = io.BytesIO()
    outlet = Outlet(out)
    outlet.write(b"before\n")
    outlet.status(b"status 1")
    outlet.write(b"[n] a\n[n] b\n")
    outlet.status(b"status 1")  # the same line, already shown: nothing written
    outlet.status(b"status 2")
    outlet.status(b"")
    outlet.write(b"after\n")
    assert out.getvalue() == (b"before\n" b"status 1" + ERASE + b"[n] a\n[n] b\nstatus 1"
                              + ERASE + b"status 2" + ERASE + b"after\n")


class _Writes(io.BytesIO):
    """A stdout that keeps its writes apart."""

    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, data):
        self.writes.append(bytes(data))
        return super().write(data)


def test_lines_written_close_together_go_out_in_one_write(monkeypatch):
    """Each hand-off to the outlet's thread costs ~50 us of CPU: a job's start
    and end lines, written within GATHER of each other, go out in one write."""
    monkeypatch.setattr(outlet, "GATHER", 0.5)
    out = _Writes()
    writer = Outlet(out)
    draining = gevent.spawn(writer.drain, lambda err: None)
    gevent.sleep(0)  # the writer waits for output
    writer.write(b"[n] === run #1 ===\n")
    gevent.sleep(0)  # the job's greenlet yields: the writer wakes
    writer.write(b"[n] === done (exit 0) ===\n")
    writer.flush()
    draining.kill()
    assert out.writes == [b"[n] === run #1 ===\n[n] === done (exit 0) ===\n"]


def _on_a_terminal(args, cwd, go):
    """Run Pegasus with stdout and stderr on a pty (raw: bytes as written, 120
    columns); return (exit status, every byte it wrote) once it ends. ``go(said)``
    is called with the output so far until it returns true, then the run goes on."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = dict(os.environ, NO_COLOR="1", TERM="xterm")
    env.pop("COLUMNS", None)
    proc = subprocess.Popen([sys.executable, "-m", "pegasus", *args], cwd=str(cwd), env=env,
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    said = bytearray()

    def read():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the pty
                return
            if not data:
                return
            said.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: go(bytes(said)) or proc.poll() is not None, timeout=60,
                 what="the run to get there")
        status = proc.wait(timeout=60)
        reader.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return status, bytes(said)


def _lines_and_statuses(said):
    """The lines written (the progress line taken out), and each progress line drawn.

    Every ERASE ends a drawn progress line; a progress line is what follows
    the last newline before an ERASE (or at the very end)."""
    lines, statuses = [], []
    for segment in said.split(ERASE):
        text, _, status = segment.rpartition(b"\n")
        lines.extend(text.decode().split("\n") if text else [])
        if status:
            statuses.append(status.decode())
    return lines, statuses


WAITING = "pegasus: 2 done, 1 running, 0 queued, "  # jobs 1 and 3 done, job 2 waits


def test_on_a_terminal_the_line_is_drawn_redrawn_and_never_breaks_a_job_line(tmp_path):
    (tmp_path / "hosts.yaml").write_text("- hostname: localhost\n  lane: [a, b]\n")
    (tmp_path / "queue.yaml").write_text(
        "- for i in 1 2 3; do echo job1-line-$i; done\n"
        "- while [ ! -e go ]; do echo job2-waiting; sleep 0.1; done; echo job2-done\n"
        "- echo job3\n")

    def go(said):  # jobs 1 and 3 are done, and the line says so: let job 2 end
        if any(s.startswith(WAITING) for s in _lines_and_statuses(said)[1]):
            (tmp_path / "go").write_text("")
            return True
        return False
    try:
        status, said = _on_a_terminal(["q"], tmp_path, go)
    finally:
        (tmp_path / "go").write_text("")  # job 2 ends whatever happened
    lines, statuses = _lines_and_statuses(said)
    assert status == 0, said
    assert len(set(statuses)) >= 2, said  # drawn, and redrawn
    assert all(STATUS.match(s) for s in statuses), statuses
    waiting = [s for s in statuses if s.startswith(WAITING)]
    assert all(", about " in s for s in waiting), waiting  # 2 of 3 done: an estimate
    assert not any("elapsed" in text or "\r" in text or "\x1b" in text for text in lines)
    job_lines = [text for text in lines if not text.startswith("pegasus:")]
    assert all(re.match(r"^\[localhost \(lane=[ab]\)\] (=== (run|done) .*===|job\d\S*)$",
                        text) for text in job_lines), job_lines
    for expected in ("job1-line-1", "job1-line-2", "job1-line-3", "job2-done", "job3"):
        assert any(text.endswith("] " + expected) for text in job_lines), expected
    assert lines[-1] == "pegasus: 3 jobs, all succeeded"
    assert said.endswith(b"pegasus: 3 jobs, all succeeded\n")  # erased before the summary


def test_no_progress_line_in_a_pipe(tmp_path):
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    (tmp_path / "queue.yaml").write_text("- echo one\n- echo two\n")
    done = run_in_process(["q"], tmp_path)
    assert done.returncode == 0
    assert done.stdout.splitlines() == [
        "[localhost] === run #1 'echo one' ===", "[localhost] one",
        "[localhost] === done (exit 0) ===", "[localhost] === run #2 'echo two' ===",
        "[localhost] two", "[localhost] === done (exit 0) ===",
        "pegasus: 2 jobs, all succeeded"]
    assert "\x1b" not in done.stdout + done.stderr and "elapsed" not in done.stderr
