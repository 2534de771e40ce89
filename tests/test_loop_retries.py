"""Retries (issue 13) on fake hosts: ``retries:``, ``retry_on:``, ``retry_lost:``,
``--retries``, ``--retry-lost``, ``{{attempt}}``.

A failed attempt with retries left runs again (same job id, ``(attempt 2)`` in
its frame), on a sub-node where it has not failed if one is free; only the
job's last attempt is its outcome (summary, exit status, failed.yaml).
"""
import os

import pytest
import yaml

from fakes import FakeJob, ctrl_c, run_app, run_loop, when_started
from helpers import read


def failed_yaml(tmp_path):
    path = tmp_path / "failed.yaml"
    return yaml.load(path.read_text(), Loader=yaml.BaseLoader) if path.exists() else []


def test_a_job_failing_once_with_retries_1_runs_twice_and_the_run_succeeds(tmp_path):
    out = run_loop(tmp_path, queue=[{"command": "a", "retries": "1"}, "b"],
                   scripts={"a": [FakeJob(exit=1), FakeJob()]})

    assert out.ran("[node-1]") == ["a", "a", "b"]
    assert out.lines("[node-1]")[:4] == ["=== run #1 'a' ===",
                                         "=== done (exit 1; it runs again) ===",
                                         "=== run #1 (attempt 2) 'a' ===",
                                         "=== done (exit 0) ==="]
    assert "job #1 exit 1 on [node-1]; it runs again (attempt 2 of 2)" in out.messages
    assert out.messages[-1] == "2 jobs, all succeeded"
    assert out.consumed == [{"command": "a", "retries": "1"}, {"command": "b"}]
    assert failed_yaml(tmp_path) == []
    assert out.status == 0


def test_without_retries_a_failing_job_runs_once(tmp_path):
    out = run_loop(tmp_path, queue=["a"], scripts={"a": [FakeJob(exit=1), FakeJob()]})

    assert out.ran("[node-1]") == ["a"]
    assert out.status == 1


def test_a_job_that_keeps_failing_runs_retries_plus_one_times_then_fails(tmp_path):
    out = run_loop(tmp_path, queue=[{"command": "a", "retries": "2"}],
                   scripts={"a": FakeJob(exit=3)})

    assert out.ran("[node-1]") == ["a", "a", "a"]
    assert out.messages[-2:] == ["1 job, 1 failed:", "  [node-1] #1 'a' (exit 3)"]
    assert failed_yaml(tmp_path) == [{"command": "a", "retries": "2"}]  # once
    assert out.status == 1


def test_retry_on_limits_retries_to_those_exit_statuses(tmp_path):
    out = run_loop(tmp_path, queue=[{"command": "a", "retries": "3", "retry_on": ["75", "137"]},
                                    {"command": "b", "retries": "3", "retry_on": ["75"]}],
                   scripts={"a": [FakeJob(exit=75), FakeJob(signal=9), FakeJob(exit=1)],
                            "b": FakeJob(exit=1)})

    assert out.ran("[node-1]") == ["a", "a", "a", "b"]
    assert [job.status for job in out.runs_of("a")] == [75, 137, 1]
    assert out.consumed[0] == {"command": "a", "retries": "3", "retry_on": ["75", "137"]}
    assert out.status == 1


def test_a_retry_goes_to_a_sub_node_where_the_job_has_not_failed(tmp_path):
    out = run_loop(tmp_path, nodes=["node-1", "node-2"],
                   queue=[{"command": "a", "retries": "1"}],
                   scripts={("node-1", "a"): FakeJob(exit=1)})

    assert out.ran("[node-1]") == ["a"]
    assert out.ran("[node-2]") == ["a"]
    assert out.status == 0


def test_attempt_is_a_template_name(tmp_path):
    out = run_loop(tmp_path, queue=[{"command": "try {{attempt}} of job {{job_id}}",
                                     "retries": "2"}],
                   scripts={"try 1 of job 1": FakeJob(exit=1), "try 2 of job 1": FakeJob(exit=1)})

    assert out.ran("[node-1]") == ["try 1 of job 1", "try 2 of job 1", "try 3 of job 1"]
    assert out.status == 0


def test_a_timed_out_attempt_is_retried(tmp_path):
    out = run_loop(tmp_path, queue=[{"command": "a", "retries": "1", "timeout": "0.05"}],
                   scripts={"a": [FakeJob(hang=True), FakeJob()]})

    assert [job.status for job in out.runs_of("a")] == [143, 0]
    assert out.status == 0


def test_a_job_lost_with_its_host_is_retried_only_with_retry_lost(tmp_path):
    out = run_loop(tmp_path, nodes=["node-1", "node-2"],
                   queue=[{"command": "a", "retries": "1", "retry_lost": "true"},
                          {"command": "b", "retries": "1"}],
                   scripts={("node-1", "a"): FakeJob(lost_after=0),
                            ("node-2", "b"): FakeJob(lost_after=0)})

    assert [job.node for job in out.runs_of("a")] == ["[node-1]", "[node-2]"]
    assert [job.status for job in out.runs_of("a")] == [None, 0]
    assert len(out.runs_of("b")) == 1  # lost, no retry_lost: outcome unknown, not re-run
    assert out.interrupted == [{"command": "b", "retries": "1"}]


def test_the_options_give_retries_to_jobs_without_their_own(tmp_path):
    out = run_app(tmp_path, nodes=["node-1", "node-2"],
                  queue=["a", {"command": "b", "retries": "0"}, "c"],
                  scripts={("node-1", "a"): FakeJob(exit=1), "b": FakeJob(exit=1),
                           ("node-1", "c"): FakeJob(lost_after=0)},
                  options=["--retries", "1", "--retry-lost"])

    assert len(out.runs_of("a")) == 2
    assert len(out.runs_of("b")) == 1  # its own 'retries: 0' wins
    assert len(out.runs_of("c")) == 2
    assert out.status == 1


def test_each_attempt_has_a_joblog_row_and_shares_the_log(tmp_path):
    out = run_app(tmp_path, queue=[{"command": "a", "retries": "1"}],
                  scripts={"a": [FakeJob(exit=1, chunks=(("stdout", b"one\n"),)),
                                 FakeJob(chunks=(("stdout", b"two\n"),))]})

    rows = [line.split("\t") for line in read(tmp_path / "logs" / "joblog.tsv").splitlines()]
    assert [(row[0], row[5], row[7]) for row in rows[1:]] == [("1", "1", "retried"),
                                                             ("1", "0", "ok")]
    assert read(tmp_path / "logs" / "1.log") == "one\n=== attempt 2 on [node-1] ===\ntwo\n"
    assert out.status == 0


def test_a_job_waiting_for_its_retry_when_the_run_stops_goes_back_with_retries_left(
        tmp_path):
    out = run_loop(tmp_path, queue=[{"command": "a", "retries": "2"}, "b"],
                   scripts={"a": FakeJob(exit=1, duration=0.05)},
                   actions=[when_started("a", ctrl_c)])

    assert out.ran("[node-1]") == ["a"]
    assert "1 job waiting to run again goes back to the head of the queue, with the " \
        "retries left" in out.messages
    assert out.queue == [{"command": "a", "retries": "1"}, "b"]
    assert out.status == 130


def test_a_job_stopped_by_a_second_ctrl_c_is_not_retried(tmp_path):
    out = run_loop(tmp_path, queue=[{"command": "a", "retries": "2"}],
                   scripts={"a": FakeJob(hang=True)},
                   actions=[when_started("a", ctrl_c, ctrl_c)])

    assert out.ran("[node-1]") == ["a"]
    assert out.queue == []
    assert failed_yaml(tmp_path) == [{"command": "a", "retries": "2"}]
    assert out.status == 130


@pytest.mark.parametrize("name, value, words", [
    ("retries", "-1", "'retries: -1' is not a whole number of 0 or more"),
    ("retries", "many", "'retries: many' is not a whole number of 0 or more"),
    ("retries", ["1", "2"], "'retries' is a list; a job has one retry count"),
    ("retry_on", "x", "'retry_on: x' is not a list of exit statuses"),
    ("retry_on", ["137", "x"], "'retry_on: 137,x' is not a list of exit statuses"),
    ("retry_on", ["0", "1"], "'retry_on: 0,1' lists exit status 0, which is success"),
    ("retry_lost", "maybe", "'retry_lost: maybe' is neither true nor false"),
])
def test_a_bad_retry_setting_is_bad_input_and_nothing_is_taken(tmp_path, name, value, words):
    queue = ["a", {"command": "b", name: value}]
    out = run_app(tmp_path, queue=queue)

    assert out.jobs == []
    assert words in out.output
    assert "queue.yaml:2 (entry 2)" in out.output
    assert out.queue == queue
    assert out.status == 2


@pytest.mark.parametrize("value", ["-1", "x"])
def test_a_bad_retries_option_is_a_usage_error(tmp_path, value):
    out = run_app(tmp_path, queue=["a"], options=[f"--retries={value}"])

    assert f"--retries must be a whole number of 0 or more" in out.output
    assert out.jobs == []
    assert out.status == 2


def test_the_retry_options_are_for_queue_mode(tmp_path):
    out = run_app(tmp_path, mode="b", queue=["a"], options=["--retries", "1"])

    assert "--retries is for queue mode (q)" in out.output
    assert out.status == 2
    assert not os.path.exists(tmp_path / "consumed.yaml")


def test_broadcast_mode_runs_each_step_once_whatever_retries_says(tmp_path):
    out = run_loop(tmp_path, mode="b", nodes=["node-1", "node-2"],
                   queue=[{"command": "a", "retries": "2"}, "b"],
                   scripts={("node-2", "a"): FakeJob(exit=1)})

    assert out.ran("[node-1]") == ["a", "b"]
    assert out.ran("[node-2]") == ["a", "b"]
    assert "step 1 'a': 1 of 2 sub-nodes failed:" in out.messages
    assert out.status == 1


def test_a_retry_that_cannot_be_sent_waits_for_another_sub_node_and_keeps_its_id(tmp_path):
    out = run_loop(tmp_path, nodes=["node-1", "node-2"],
                   queue=[{"command": "a", "retries": "1"}],
                   scripts={("node-1", "a"): [FakeJob(exit=1), FakeJob()],
                            ("node-2", "a"): FakeJob(not_started=True)})

    assert [job.node for job in out.runs_of("a")] == ["[node-1]", "[node-1]"]
    assert out.lines("[node-1]")[2] == "=== run #1 (attempt 2) 'a' ==="
    assert out.consumed == [{"command": "a", "retries": "1"}]  # taken once
    assert out.queue == []
    assert out.status == 0


def test_a_failed_attempt_that_is_retried_does_not_count_for_halt(tmp_path):
    out = run_app(tmp_path, queue=[{"command": "a", "retries": "1"}, "b"],
                  scripts={"a": [FakeJob(exit=1), FakeJob()]},
                  options=["--halt", "soon,fail=1"])

    assert out.ran("[node-1]") == ["a", "a", "b"]
    assert not any("halted" in message for message in out.messages)
    assert out.status == 0
