"""The halt policy (issue 13) on fake hosts: ``--halt soon|now,fail=N|P%``.

Once it fires nothing more is taken (the rest of queue.yaml stays byte for
byte), ``soon`` lets running jobs finish, ``now`` stops them; exit status 1,
and the summary says why.
"""
import pytest

from fakes import FakeJob, deferred, release, run_app, run_loop, when_printed

FAILS = FakeJob(exit=1)


def queue_text(tmp_path):
    return (tmp_path / "queue.yaml").read_text()


def test_soon_takes_nothing_after_n_failures_and_leaves_the_rest_byte_for_byte(tmp_path):
    rest = "- c   # a comment that stays\n# and a line of its own\n- 'd'\n- e\n"
    out = run_loop(tmp_path, queue="- a\n- b\n" + rest, halt_policy="soon,fail=2",
                   scripts={command: FAILS for command in "abcde"})

    assert [job.command for job in out.jobs] == ["a", "b"]
    assert queue_text(tmp_path) == rest
    assert "--halt soon,fail=2: 2 jobs failed, so no more entries are taken" in out.messages
    assert out.messages[-1] == "halted: --halt soon,fail=2: 2 jobs failed"
    assert out.status == 1


def test_soon_lets_running_jobs_finish(tmp_path):
    out = run_loop(tmp_path, nodes=["node-1", "node-2"], queue=["b", "a", "c", "d"],
                   halt_policy="soon,fail=1",
                   scripts={"a": FAILS, "b": FakeJob(hang=True)},
                   actions=[when_printed("--halt soon", deferred(release("b")))])

    assert [(job.command, job.status) for job in out.jobs] == [("b", 0), ("a", 1)]
    assert out.called("cancel") == []
    assert ("--halt soon,fail=1: 1 job failed, so no more entries are taken; waiting for "
            "1 running job to finish") in out.messages
    assert out.queue == ["c", "d"]
    assert out.status == 1


def test_now_stops_the_running_jobs(tmp_path):
    out = run_loop(tmp_path, nodes=["node-1", "node-2"], queue=["b", "a", "c"],
                   halt_policy="now,fail=1",
                   scripts={"a": FAILS, "b": FakeJob(hang=True, term_deaf=True)})

    assert [(job.command, job.status) for job in out.jobs] == [("b", 137), ("a", 1)]
    assert out.called("cancel") == [("[node-1]", "b")]
    assert out.messages[:2] == [
        "--halt now,fail=1: 1 job failed, so no more entries are taken",
        "stopping 1 running job"]
    assert out.messages[-1] == "halted: --halt now,fail=1: 1 job failed"
    assert out.queue == ["c"]
    assert out.status == 1


def test_a_percentage_fires_once_ten_jobs_have_finished(tmp_path):
    queue = [f"ok{i}" for i in range(6)] + [f"bad{i}" for i in range(14)]
    out = run_loop(tmp_path, queue=queue, halt_policy="soon,fail=30%",
                   scripts={f"bad{i}": FAILS for i in range(14)})

    assert len(out.jobs) == 10  # at 9 finished, 3 failed (33%) is not enough jobs yet
    assert out.messages[-1] == "halted: --halt soon,fail=30%: 4 of 10 finished jobs failed (40%)"
    assert out.queue == queue[10:]
    assert out.status == 1


def test_without_halt_every_job_runs(tmp_path):
    out = run_loop(tmp_path, queue=["a", "b", "c"], scripts={"a": FAILS, "b": FAILS})

    assert len(out.jobs) == 3
    assert not any("--halt" in message or "halted" in message for message in out.messages)
    assert out.status == 1


def test_broadcast_halts_after_a_failed_step(tmp_path):
    out = run_loop(tmp_path, mode="b", nodes=["node-1", "node-2"], queue=["a", "b"],
                   halt_policy="soon,fail=1", scripts={("node-2", "a"): FAILS})

    assert [job.command for job in out.jobs] == ["a", "a"]
    assert out.queue == ["b"]
    assert out.messages[-1] == "halted: --halt soon,fail=1: 1 job failed"
    assert out.status == 1


def test_the_option_through_the_command_line(tmp_path):
    out = run_app(tmp_path, queue=["a", "b"], scripts={"a": FAILS},
                  options=["--halt", "soon,fail=1"])

    assert [job.command for job in out.jobs] == ["a"]
    assert out.queue == ["b"]
    assert out.status == 1


@pytest.mark.parametrize("value, words", [
    ("soon", "--halt must be 'never', 'soon,fail=N' or 'now,fail=N'"),
    ("later,fail=1", "not 'later,fail=1'"),
    ("soon,success=1", "not 'soon,success=1'"),
    ("soon,fail=0", "--halt soon,fail=0: fail=N needs N of 1 or more"),
    ("now,fail=150%", "--halt now,fail=150%: fail=P% needs P above 0 and at most 100"),
])
def test_bad_halt_syntax_is_a_usage_error(tmp_path, value, words):
    out = run_app(tmp_path, queue=["a"], options=[f"--halt={value}"])

    assert words in out.output
    assert out.jobs == []
    assert out.queue == ["a"]
    assert out.status == 2


def test_halt_is_for_queue_and_broadcast_modes(capsys):
    from pegasus import cli

    assert cli.main(["l", "--halt", "soon,fail=1"]) == 2
    assert "--halt is for queue and broadcast modes (q, b)" in capsys.readouterr().err
