"""Cancel hooks (issue 13) on fake hosts: ``cancel:`` in a queue entry or on a host.

Whenever Pegasus ends a job (timeout, second Ctrl-c, ``--halt now``) it runs
the job's hook on the same sub-node first, then TERM and KILL as usual; a
hook that fails or hangs is said and does not keep the job from being stopped.
"""
import pytest

from fakes import FakeJob, ctrl_c, run_app, run_loop, when_started


def test_a_timed_out_job_gets_its_entrys_hook_rendered_then_term(tmp_path):
    out = run_loop(tmp_path, queue=[{"command": "train {{bs}}", "bs": "8", "timeout": "0.05",
                                     "cancel": "docker exec c pkill -f 'train {{bs}}'"}],
                   scripts={"train 8": FakeJob(hang=True)})

    calls = [(method, command) for _, method, command in out.calls
             if method in ("aside", "cancel")]
    assert calls == [("aside", "docker exec c pkill -f 'train 8'"), ("cancel", "train 8")]
    assert "[node-1] cancel hook of job #1: running 'docker exec c pkill -f 'train 8''" \
        in out.messages
    assert out.consumed[0]["cancel"] == "docker exec c pkill -f 'train {{bs}}'"
    assert out.status == 1


def test_a_hosts_hook_runs_for_its_jobs_and_an_entrys_own_wins(tmp_path):
    out = run_loop(tmp_path, nodes=[{"hostname": "node-1", "box": "c1",
                                     "cancel": "docker stop {{box}} # {{job_id}}"}],
                   queue=[{"command": "a", "timeout": "0.05"},
                          {"command": "b", "timeout": "0.05", "cancel": "own {{box}}"}],
                   scripts={"a": FakeJob(hang=True), "b": FakeJob(hang=True)})

    assert out.called("aside") == [("[node-1 (box=c1)]", "docker stop c1 # 1"),
                                   ("[node-1 (box=c1)]", "own c1")]
    assert len(out.called("cancel")) == 2


def test_the_second_ctrl_c_runs_each_running_jobs_hook(tmp_path):
    out = run_loop(tmp_path, nodes=["node-1", "node-2"],
                   queue=[{"command": "a", "cancel": "stop a"}, "b"],
                   scripts={"a": FakeJob(hang=True), "b": FakeJob(hang=True)},
                   actions=[when_started("b", ctrl_c, ctrl_c)])

    assert out.called("aside") == [("[node-1]", "stop a")]  # b has none
    assert sorted(out.called("cancel")) == [("[node-1]", "a"), ("[node-2]", "b")]
    assert out.status == 130


def test_halt_now_runs_the_hook_of_the_job_it_stops(tmp_path):
    out = run_app(tmp_path, nodes=["node-1", "node-2"],
                  queue=[{"command": "a", "cancel": "stop a"}, "b"],
                  scripts={"a": FakeJob(hang=True), "b": FakeJob(exit=1, duration=0.01)},
                  options=["--halt", "now,fail=1"])

    assert out.called("aside") == [("[node-1]", "stop a")]
    assert out.called("cancel") == [("[node-1]", "a")]


@pytest.mark.parametrize("hook, words", [
    (FakeJob(exit=3, chunks=(("stdout", b"no such container\n"),)),
     "[node-1] cancel hook of job #1 failed (exit 3): no such container; the job is "
     "stopped as usual (TERM, then KILL)"),
    (FakeJob(hang=True),
     "[node-1] cancel hook of job #1 no answer after 0.05 s; the job is stopped as usual"),
    (FakeJob(lost_after=0),
     "[node-1] cancel hook of job #1 could not run: fake: connection reset by peer"),
])
def test_a_hook_that_fails_or_hangs_is_said_and_the_job_is_still_stopped(tmp_path, hook,
                                                                         words):
    out = run_loop(tmp_path, queue=[{"command": "a", "timeout": "0.05", "cancel": "stop"}],
                   scripts={"a": FakeJob(hang=True, term_deaf=True), "stop": hook})

    assert any(words in message for message in out.messages), out.messages
    assert out.called("cancel") == [("[node-1]", "a")]
    assert out.called("kill") == [("[node-1]", "a")]
    assert out.messages[-1] == "  [node-1] #1 'a' (timed out after 0.05s, exit 124)"


def test_a_hosts_hook_that_does_not_render_for_a_job_is_said_and_term_follows(tmp_path):
    out = run_loop(tmp_path, nodes=[{"hostname": "node-1", "cancel": "pkill -f {{bs}}"}],
                   queue=[{"command": "a", "timeout": "0.05"}],
                   scripts={"a": FakeJob(hang=True)})

    assert out.called("aside") == []
    assert any("[node-1] cancel hook of job #1 could not be rendered" in message
               for message in out.messages), out.messages
    assert out.called("cancel") == [("[node-1]", "a")]


def test_a_job_ending_on_its_own_runs_no_hook(tmp_path):
    out = run_loop(tmp_path, queue=[{"command": "a", "cancel": "stop"}])

    assert out.called("aside") == []
    assert out.status == 0


def test_an_entrys_hook_naming_an_unknown_parameter_is_bad_input(tmp_path):
    queue = ["a", {"command": "b", "cancel": "pkill -f {{nope}}"}]
    out = run_app(tmp_path, queue=queue)

    assert "nope" in out.output
    assert "queue.yaml:2 (entry 2)" in out.output
    assert out.jobs == []
    assert out.queue == queue
    assert out.status == 2


def test_a_list_of_hooks_in_an_entry_is_bad_input_not_a_sweep(tmp_path):
    queue = ["a", {"command": "b", "cancel": ["pkill x", "pkill y"]}]
    out = run_app(tmp_path, queue=queue)

    assert "'cancel' is a list; a job has one cancel hook" in out.output
    assert "queue.yaml:2 (entry 2)" in out.output
    assert out.jobs == []
    assert out.queue == queue
    assert out.status == 2
