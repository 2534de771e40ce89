"""Timeouts (issue 13) on fake hosts: ``timeout:`` in an entry and ``--timeout``.

A job that runs past its timeout gets TERM (cancel), then KILL, and is
reported as timed out with exit status 124, not as an ordinary failure.
"""
import pytest

from fakes import FakeJob, deferred, release, run_app, run_loop, when_printed


def test_a_job_past_its_timeout_is_stopped_and_reported_as_timed_out(tmp_path):
    out = run_loop(tmp_path, queue=[{"command": "a", "timeout": "0.05"}, "b"],
                   scripts={"a": FakeJob(hang=True)})

    assert out.called("cancel") == [("[node-1]", "a")]
    assert "[node-1] timed out after 0.05s: stopping it (TERM, then KILL 0.01 s later)" \
        in out.messages
    assert out.lines("[node-1]")[1] == "=== done (timed out after 0.05s, exit 124) ==="
    assert out.messages[-2:] == ["2 jobs, 1 failed:",
                                 "  [node-1] #1 'a' (timed out after 0.05s, exit 124)"]
    assert [(job.command, job.status) for job in out.jobs] == [("a", 143), ("b", 0)]
    assert out.consumed == [{"command": "a", "timeout": "0.05"}, {"command": "b"}]
    assert out.interrupted == []  # its outcome is known
    assert out.status == 1


def test_the_job_log_says_a_job_past_its_timeout_timed_out(tmp_path):
    run_app(tmp_path, queue=[{"command": "a", "timeout": "0.05"}, "b"],
            scripts={"a": FakeJob(hang=True)})

    rows = [line.split("\t") for line in (tmp_path / "logs" / "joblog.tsv").read_text()
            .splitlines()[1:]]
    assert sorted((r[0], r[5], r[7]) for r in rows) == [("1", "124", "timed out"),
                                                        ("2", "0", "ok")]


def test_a_job_deaf_to_term_is_killed(tmp_path):
    out = run_loop(tmp_path, queue=[{"command": "a", "timeout": "0.05"}],
                   scripts={"a": FakeJob(hang=True, term_deaf=True)})

    assert out.called("cancel") == [("[node-1]", "a")]
    assert out.called("kill") == [("[node-1]", "a")]
    assert out.messages[-1] == "  [node-1] #1 'a' (timed out after 0.05s, exit 124)"
    assert out.status == 1


def test_the_next_job_on_the_sub_node_is_not_stopped_by_a_timed_out_one(tmp_path):
    """The KILL and give-up timers of a timed-out job end with it."""
    out = run_loop(tmp_path, queue=[{"command": "a", "timeout": "0.05"}, "b"],
                   scripts={"a": FakeJob(hang=True), "b": FakeJob(heartbeats=30)})

    assert [(job.command, job.status) for job in out.jobs] == [("a", 143), ("b", 0)]
    assert out.called("kill") == []
    assert out.status == 1


def test_a_job_within_its_timeout_runs_as_usual(tmp_path):
    out = run_loop(tmp_path, queue=[{"command": "a", "timeout": "1h"}])

    assert out.called("cancel") == []
    assert out.messages == ["1 job, all succeeded"]
    assert out.status == 0


def test_the_timeout_option_applies_to_jobs_without_their_own(tmp_path):
    out = run_app(tmp_path, nodes=["node-1", "node-2"],
                  queue=[{"command": "a", "timeout": "1h"}, "b"],
                  scripts={"a": FakeJob(hang=True), "b": FakeJob(hang=True)},
                  options=["--timeout", "0.05"],
                  actions=[when_printed("timed out after", deferred(release("a")))])

    assert [(job.command, job.status) for job in out.jobs] == [("a", 0), ("b", 143)]
    assert out.messages[-2:] == ["2 jobs, 1 failed:",
                                 "  [node-2] #2 'b' (timed out after 0.05s, exit 124)"]
    assert out.status == 1


def test_broadcast_a_timed_out_sub_node_fails_the_step_and_e_stops(tmp_path):
    out = run_loop(tmp_path, mode="b", nodes=["node-1", "node-2"], error_aborts=True,
                   queue=[{"command": "a", "timeout": "0.05"}, "b"],
                   scripts={("node-2", "a"): FakeJob(hang=True)})

    assert "step 1 'a': 1 of 2 sub-nodes failed:" in out.messages
    assert "  [node-2] timed out after 0.05s, exit 124" in out.messages
    assert out.queue == ["b"]
    assert out.status == 1


@pytest.mark.parametrize("value, words", [
    ("soon", "'timeout: soon' is not a duration"),
    ("0", "'timeout: 0' is not a duration"),
    (["1", "2"], "'timeout' is a list; a job has one timeout"),
])
def test_a_bad_timeout_is_bad_input_and_nothing_is_taken(tmp_path, value, words):
    queue = ["a", {"command": "b", "timeout": value}]
    out = run_app(tmp_path, queue=queue)

    assert out.jobs == []
    assert words in out.output
    assert "queue.yaml:2 (entry 2)" in out.output
    assert out.queue == queue
    assert out.status == 2


@pytest.mark.parametrize("value", ["soon", "0", "-1"])
def test_a_bad_timeout_option_is_a_usage_error(tmp_path, value):
    out = run_app(tmp_path, queue=["a"], options=[f"--timeout={value}"])

    assert f"--timeout must be a duration longer than 0 (90, 90s, 30m, 2h, 1d), not " \
        f"'{value}'" in out.output
    assert out.jobs == []
    assert out.status == 2


def test_the_timeout_option_is_for_queue_and_broadcast_modes(tmp_path):
    from pegasus import cli

    assert cli.main(["l", "--timeout", "1m"]) == 2
