"""``--fold`` on fake hosts: a step's identical outputs printed once under their
sub-nodes, in an order that never depends on which sub-node finished first;
the bound; a stop mid-step; queue mode's summary grouped by error; ``-i``."""

import os
import random

import pytest

from fakes import FakeJob, ctrl_c, run_app, when_finished

TWELVE = [f"node-{i}" for i in range(1, 13)]
SAME, OTHER = b"kernel 6.1\nok\n", b"kernel 5.4\n"


def job(chunks, duration=0.0, exit=0, **kwargs):
    return FakeJob(chunks=tuple(("stdout", c) for c in chunks), duration=duration,
                   exit=exit, **kwargs)


def twelve_scripts(rng):
    """node-4 and node-9 print another text; every node ends at a random time."""
    ends = rng.sample(range(12), 12)
    return {(f"node-{i}", "uname"): job([OTHER if i in (4, 9) else SAME],
                                        duration=ends[i - 1] * 0.002)
            for i in range(1, 13)}


def folded(out):
    """The printed lines that are not Pegasus's own."""
    return [line for line in out.output.splitlines() if not line.startswith("pegasus: ")]


@pytest.mark.parametrize("seed", range(20))
def test_identical_outputs_are_printed_once_under_their_sub_nodes(tmp_path, seed):
    (tmp_path / str(seed)).mkdir()
    out = run_app(tmp_path / str(seed), "b", nodes=TWELVE, queue=["uname"],
                  scripts=twelve_scripts(random.Random(seed)), options=["--fold"])

    assert folded(out) == ["=== node-[1-3,5-8,10-12] (10): exit 0 ===",
                           "kernel 6.1", "ok",
                           "=== node-[4,9] (2): exit 0 ===",
                           "kernel 5.4"]
    assert out.messages[0] == "step 1 'uname': all 12 sub-nodes succeeded"
    assert out.status == 0


def test_same_output_with_different_statuses_says_each_status_with_its_sub_nodes(tmp_path):
    scripts = {("node-2", "check"): job([b"disk full\n"], exit=1),
               ("node-3", "check"): job([b"disk full\n"], exit=1),
               "check": job([b"disk full\n"])}
    out = run_app(tmp_path, "b", nodes=["node-1", "node-2", "node-3", "node-4"],
                  queue=["check"], scripts=scripts, options=["--fold"])

    assert folded(out) == ["=== node-[1-4] (4): exit 0 on node-[1,4]; exit 1 on node-[2-3] ===",
                           "disk full"]
    assert out.messages[:2] == ["step 1 'check': 2 of 4 sub-nodes failed:",
                                "  node-[2-3] (2): exit 1"]
    assert out.status == 1


def test_groups_of_the_same_size_come_in_hosts_yaml_order(tmp_path):
    scripts = {(f"node-{i}", "id"): job([f"group {i % 2}\n".encode()], duration=(5 - i) * 0.002)
               for i in range(1, 5)}
    out = run_app(tmp_path, "b", nodes=["node-1", "node-2", "node-3", "node-4"],
                  queue=["id"], scripts=scripts, options=["--fold"])

    assert folded(out) == ["=== node-[1,3] (2): exit 0 ===", "group 1",
                           "=== node-[2,4] (2): exit 0 ===", "group 0"]


def test_stdout_and_stderr_are_both_gathered_and_frames_are_not_printed(tmp_path):
    script = FakeJob(chunks=(("stdout", b"out\n"), ("stderr", b"err\n"), ("stdout", b"more")))
    out = run_app(tmp_path, "b", nodes=["node-1", "node-2"], queue=["x", "y"],
                  scripts={"x": script}, options=["--fold"])

    assert folded(out) == ["=== node-[1-2] (2): exit 0 ===", "out", "more", "err",
                           "=== node-[1-2] (2): exit 0 ==="]
    assert "=== run" not in out.output


def test_output_beyond_the_bound_is_cut_with_a_note_and_is_whole_in_the_job_log(tmp_path):
    line = b"x" * 1023 + b"\n"  # 1 KiB a line: 1024 of them fill the 1 MiB bound
    big = FakeJob(chunks=(("stdout", line * 1500),))
    out = run_app(tmp_path, "b", nodes=["node-1", "node-2"], queue=["dump"],
                  scripts={"dump": big}, options=["--fold"])

    lines = folded(out)
    assert lines[0] == "=== node-[1-2] (2): exit 0 ==="
    assert len(lines) - 1 == 1024
    assert ("output cut at 1 MiB a sub-node; the whole output is in the job logs "
            "(pegasus log ID)") in out.messages
    logs = sorted(os.listdir(tmp_path / "logs"))
    assert [os.path.getsize(tmp_path / "logs" / name) for name in logs
            if name.endswith(".log")] == [1500 * 1024] * 2


def test_a_step_stopped_by_a_second_ctrl_c_prints_what_was_gathered_marked_incomplete(tmp_path):
    scripts = {("node-3", "s1"): job([b"half way\n"], hang=True), "s1": job([b"half way\n"])}
    out = run_app(tmp_path, "b", nodes=["node-1", "node-2", "node-3"], queue=["s1", "s2"],
                  scripts=scripts, options=["--fold"],
                  actions=[when_finished("s1", ctrl_c, ctrl_c, nth=2)])

    assert "the step was stopped: its output is incomplete" in out.messages
    assert folded(out) == [
        "=== node-[1-3] (3): exit 0 on node-[1-2]; exit 143 (killed by SIGTERM) on node-3 ===",
        "half way"]
    assert out.queue == ["s2"]
    assert out.status == 130


def test_queue_mode_folds_the_summary_failed_jobs_grouped_by_error(tmp_path):
    scripts = {"a": job([], exit=2), "b": job([], exit=2), "c": job([], exit=2),
               "d": job([], exit=2), "e": job([], exit=7)}
    out = run_app(tmp_path, "q", nodes=["node-1", "node-2"], queue=list("abcdef"),
                  scripts=scripts, options=["--fold"])

    summary = out.messages[-3:]
    assert summary[0] == "6 jobs, 5 failed:"
    assert summary[1].startswith("  exit 2 (4 jobs) on node-[1-2]: ")
    assert summary[1].endswith(" and 1 more")
    assert summary[2] in ("  exit 7 (1 job) on node-1: #5 'e'", "  exit 7 (1 job) on node-2: #5 'e'")
    assert out.status == 1


def test_ignore_errors_is_accepted_in_broadcast_mode_and_goes_on_after_a_failed_step(tmp_path):
    out = run_app(tmp_path, "b", nodes=["node-1", "node-2"], queue=["s1", "s2"],
                  scripts={("node-2", "s1"): job([], exit=5)}, options=["-i"])

    assert out.ran("[node-2]") == ["s1", "s2"]
    assert out.queue == []
    assert out.status == 1


@pytest.mark.parametrize("flag", ["-i", "--ignore-errors"])
def test_ignore_errors_with_error_aborts_is_a_usage_error(tmp_path, flag):
    out = run_app(tmp_path, "b", nodes=["node-1"], queue=["s1"], options=[flag, "-e"])

    assert out.messages[0] == ("-i/--ignore-errors (go on after a failed step) and "
                               "-e/--error-aborts (stop after it) contradict each other: "
                               "give one or the other")
    assert out.queue == ["s1"] and out.jobs == []
    assert out.status == 2


def test_ignore_errors_in_queue_mode_is_a_usage_error(tmp_path):
    out = run_app(tmp_path, "q", nodes=["node-1"], queue=["s1"], options=["-i"])

    assert out.messages[0] == "-i/--ignore-errors is for broadcast mode (b)"
    assert out.queue == ["s1"] and out.status == 2


def test_print_period_applies_to_each_group_and_zero_prints_the_headers_only(tmp_path):
    (tmp_path / "p2").mkdir()
    (tmp_path / "p0").mkdir()
    lines = job([b"".join(b"line %d\n" % i for i in range(1, 6))])
    every_2nd = run_app(tmp_path / "p2", "b", nodes=["node-1", "node-2"], queue=["count"],
                        scripts={"count": lines}, options=["--fold", "-p", "2"])
    none = run_app(tmp_path / "p0", "b", nodes=["node-1", "node-2"], queue=["count"],
                   scripts={"count": lines}, options=["--fold", "-p", "0"])

    assert folded(every_2nd) == ["=== node-[1-2] (2): exit 0 ===", "line 1", "line 3", "line 5"]
    assert folded(none) == ["=== node-[1-2] (2): exit 0 ==="]


def test_fold_in_lock_mode_is_a_usage_error(tmp_path):
    out = run_app(tmp_path, "l", nodes=["node-1"], queue=["s1"], options=["--fold"])

    assert out.messages[0] == "--fold is for queue and broadcast modes (q, b)"
    assert out.status == 2
