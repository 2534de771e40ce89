"""Queue mode on localhost sub-nodes: the real CLI, no SSH needed (the exec limit's
and the late connections' tests run it in this process: ``run_in_process``)."""

import os
import subprocess
import sys
from functools import partial

import pytest

import helpers
from helpers import Running

wait_for = partial(helpers.wait_for, interval=0.02)  # this file polls every 20 ms


# Issue 10 §7: the failed-job summary lists jobs in queue order, not in the order
# they finished (modes.QueueLoop keeps a take number per started job).
def test_the_summary_lists_failed_jobs_in_queue_order(tmp_path):
    # Each job ends only once Pegasus has printed the next one's end: they end, and
    # are recorded, in the reverse of their queue order.
    out = tmp_path / "out.txt"
    (tmp_path / "hosts.yaml").write_text("- hostname: localhost\n  slot: [a, b, c]\n")
    after = "while ! grep -q '^\\[[^]]*\\] === done (exit %d) ===$' " + str(out) + \
        "; do sleep 0.01; done; "
    (tmp_path / "queue.yaml").write_text(
        f"- {after % 4}exit 3\n- {after % 5}exit 4\n- exit 5\n")
    with open(out, "w") as f:
        status = subprocess.run([sys.executable, "-m", "pegasus", "q"], cwd=str(tmp_path),
                                stdout=f, stderr=subprocess.STDOUT, timeout=60).returncode
    text = out.read_text()
    assert status == 1, text
    summary = text[text.index("pegasus: 3 jobs, 3 failed:"):].splitlines()
    assert [line.rsplit("(", 1)[1] for line in summary[1:4]] == [
        "exit 3)", "exit 4)", "exit 5)"], summary


def test_daemon_with_a_bad_entry_at_start_runs_what_comes_before_and_waits(tmp_path):
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    (tmp_path / "queue.yaml").write_text("- echo first > first.txt\n- echo {{ nope }}\n")
    run = Running(["q", "-d"], tmp_path)
    try:
        wait_for(lambda: (tmp_path / "first.txt").exists(), what="the good entry to run")
        wait_for(lambda: "Pegasus waits and reads it again" in run.output, what="the report")
        fixed = tmp_path / "fixed.yaml"
        fixed.write_text("- echo fixed > fixed.txt\n")
        os.replace(fixed, tmp_path / "queue.yaml")
        wait_for(lambda: (tmp_path / "fixed.txt").exists(), what="the fixed entry to run")
    finally:
        run.interrupt()
        status = run.finish(timeout=30)
    assert status == 130
    assert "unknown name 'nope'" in run.output


def test_ctrl_c_of_an_idle_daemon_says_no_job_is_running(tmp_path):
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    (tmp_path / "queue.yaml").write_text("- echo one > one.txt\n")
    run = Running(["q", "-d"], tmp_path)
    try:
        wait_for(lambda: "=== done (exit 0) ===" in run.output, what="the entry to run")
    finally:
        run.interrupt()
        status = run.finish(timeout=30)
    assert status == 130
    assert "Ctrl-c: no new jobs will start and the queue file is left as it is; " \
        "no job is running" in run.output, run.output
    assert "waiting for 0" not in run.output


def test_ctrl_c_in_the_terminal_does_not_reach_local_jobs(tmp_path):
    # The terminal sends SIGINT to its whole foreground process group.
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    (tmp_path / "queue.yaml").write_text(
        "- touch started; while [ ! -e release ]; do sleep 0.05; done; echo finished-ok\n"
        "- echo never > never.txt\n")
    run = Running(["q"], tmp_path)
    wait_for(lambda: (tmp_path / "started").exists(), what="the job to start")
    run.interrupt()
    wait_for(lambda: "Ctrl-c" in run.output, what="the Ctrl-c notice")
    (tmp_path / "release").touch()
    assert run.finish(timeout=30) == 130
    out = run.output
    assert "finished-ok" in out and "=== done (exit 0) ===" in out
    assert not (tmp_path / "never.txt").exists()
    assert "echo never > never.txt" in (tmp_path / "queue.yaml").read_text()


def test_output_goes_through_a_pipe_unwrapped_and_uncoloured(tmp_path):
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    long = "x" * 5000
    (tmp_path / "queue.yaml").write_text(f"- printf '%s\\n' {long}\n")
    res = subprocess.run([sys.executable, "-m", "pegasus", "q"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "TERM": "xterm"})
    assert res.returncode == 0
    assert f"[localhost] {long}\n" in res.stdout
    assert "\x1b[" not in res.stdout


def test_a_command_over_the_exec_limit_fails_once_and_the_queue_goes_on(tmp_path,
                                                                        run_in_process):
    """Issue 10: it was put back and taken again forever (consumed.yaml grew 65 MB in 10 s)."""
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    (tmp_path / "queue.yaml").write_text("- echo %s\n- echo next\n" % ("x" * 140000))
    res = run_in_process(["q"], tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "cannot start the command: Argument list too long" in res.stdout
    assert "=== done (exit 126) ===" in res.stdout
    assert "[localhost] next" in res.stdout
    assert helpers.queue_entries(tmp_path / "queue.yaml") == []
    assert len(helpers.queue_entries(tmp_path / "consumed.yaml")) == 2  # each taken once
    assert not (tmp_path / "interrupted.yaml").exists()


def test_ten_thousand_sub_nodes_work(tmp_path):
    """Issue 10: choosing free sub-nodes was O(n^2) (10,000 sub-nodes: 50 jobs in 43 s,
    the loop blocked for seconds). The subprocess's deadline is the check."""
    (tmp_path / "hosts.yaml").write_text(
        "- hostname: localhost\n  i: [%s]\n" % ", ".join(str(i) for i in range(10000)))
    (tmp_path / "queue.yaml").write_text("- echo {{i}}\n" * 100)
    res = subprocess.run([sys.executable, "-m", "pegasus", "q", "-p", "0"],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "100 jobs, all succeeded" in res.stdout
    assert helpers.queue_entries(tmp_path / "queue.yaml") == []


@pytest.mark.slow  # 3 s or more
def test_entries_appended_without_the_lock_while_a_daemon_takes_are_never_lost(tmp_path):
    """`echo '- cmd' >> queue.yaml` while Pegasus rewrites the file: an append that lands
    in the old file after its tail was copied is carried over (a new user's trial lost
    32 of 300 such appends)."""
    (tmp_path / "hosts.yaml").write_text("- hostname: localhost\n  slot: [1, 2, 3, 4]\n")
    (tmp_path / "queue.yaml").write_text("")
    n = 300
    run = Running(["q", "-d", "-p", "0"], tmp_path)
    try:
        subprocess.run(["sh", "-c", 'i=1; while [ $i -le %d ]; do echo "- echo job$i" >> '
                        'queue.yaml; i=$((i+1)); sleep 0.01; done' % n],  # a user's pace
                       cwd=str(tmp_path), check=True)
        # Only "all ran" ends the wait: an empty queue file is no sign of the end,
        # since an append carried over from the old file comes just after a rewrite.
        wait_for(lambda: run.output.count("=== done (exit 0) ===") >= n, timeout=120,
                 what="every appended entry to run")
    finally:
        run.interrupt()
        run.finish(timeout=30)
    ran = sorted(line.split("'")[1] for line in run.output.splitlines()
                 if "=== run " in line)
    assert ran == sorted("echo job%d" % i for i in range(1, n + 1))


def test_ten_thousand_sub_nodes_whose_first_connections_end_late(tmp_path, monkeypatch,
                                                                run_in_process):
    """The same when the first connections outlast app.FIRST_ANSWER (a busy
    machine): each sub-node that came up looked at every sub-node of its host,
    O(n^2), 20 s of CPU. Here every first connection ends in the background.
    Sub-nodes compared with each other are counted: a few per sub-node, not
    one per pair (the search came back once: 50 million comparisons)."""
    from pegasus import app, model

    monkeypatch.setattr(app, "FIRST_ANSWER", 0)
    compared = []
    equal = model.SubNode.__eq__
    monkeypatch.setattr(model.SubNode, "__eq__",
                        lambda a, b: compared.append(1) or equal(a, b))
    (tmp_path / "hosts.yaml").write_text(
        "- hostname: localhost\n  i: [%s]\n" % ", ".join(str(i) for i in range(10000)))
    (tmp_path / "queue.yaml").write_text("- echo {{i}}\n" * 10)
    res = run_in_process(["q", "-p", "0"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "connecting: localhost" in res.stdout, res.stdout  # the late path was taken
    assert "10 jobs, all succeeded" in res.stdout
    assert len(compared) < 10 * 10000, "sub-nodes compared pairwise"
