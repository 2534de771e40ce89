"""Broadcast mode's loop on fake hosts: lock-step, -e, Ctrl-c, SIGTERM, lost sub-nodes.

As in ``test_loop``: scripted jobs and hosts, actions at points of the run,
and only what a user would check. Only ``fakes`` knows how a loop is built.
"""

from fakes import (Answer, FakeJob, append, ctrl_c, deferred, release, run_loop, sigterm,
                   stops_answering, when_finished, when_printed, when_queue_empty,
                   when_started)

THREE = ["node-1", "node-2", "node-3"]
LABELS = ["[node-1]", "[node-2]", "[node-3]"]
STEPS = ["s1", "s2", "s3"]


def broadcast(tmp_path, **kwargs):
    kwargs.setdefault("nodes", THREE)
    kwargs.setdefault("queue", STEPS)
    return run_loop(tmp_path, "b", **kwargs)


def test_each_step_runs_everywhere_and_the_next_only_when_all_are_done(tmp_path):
    slow = FakeJob(hang=True)  # node-1 ends s1 only once the others have ended it
    out = broadcast(tmp_path, scripts={("node-1", "s1"): slow},
                    actions=[when_finished("s1", deferred(release("s1")), nth=2)])

    for label in LABELS:
        assert out.ran(label) == STEPS
    for before, after in zip(STEPS, STEPS[1:]):
        assert max(j.end for j in out.runs_of(before)) < \
            min(j.start for j in out.runs_of(after))
    assert out.taken_for == ["broadcast to 3 sub-nodes"] * 3
    assert out.messages == [
        "step 1 's1': all 3 sub-nodes succeeded", "step 2 's2': all 3 sub-nodes succeeded",
        "step 3 's3': all 3 sub-nodes succeeded",
        "3 steps, all succeeded on every sub-node:",
        "  step 1 's1': 3 ok", "  step 2 's2': 3 ok", "  step 3 's3': 3 ok"]
    assert out.queue == []
    assert out.status == 0


def test_a_failed_step_is_reported_and_the_next_steps_run(tmp_path):
    out = broadcast(tmp_path, scripts={("node-3", "s2"): FakeJob(exit=128)})

    assert "step 2 's2': 1 of 3 sub-nodes failed:" in out.messages
    assert "  [node-3] exit 128" in out.messages
    assert out.ran("[node-3]") == STEPS
    assert out.messages[-4:] == ["3 steps, 1 with failures:", "  step 1 's1': 3 ok",
                                 "  step 2 's2': 2 ok, 1 failed: [node-3] exit 128",
                                 "  step 3 's3': 3 ok"]
    assert out.status == 1


def test_error_aborts_stops_after_a_failed_step(tmp_path):
    out = broadcast(tmp_path, error_aborts=True,
                    scripts={("node-3", "s2"): FakeJob(exit=128)})

    assert "--error-aborts: step 2 failed, so no more entries are taken" in out.messages
    assert all(out.ran(label) == ["s1", "s2"] for label in LABELS)
    assert out.queue == ["s3"]
    assert out.status == 1


def test_ctrl_c_lets_the_current_step_finish_everywhere(tmp_path):
    out = broadcast(tmp_path, scripts={"s1": FakeJob(hang=True)},
                    actions=[when_started("s1", ctrl_c),
                             when_printed("Ctrl-c again stops them",
                                          deferred(release("s1")))])

    assert [(job.command, job.status) for job in out.jobs] == [("s1", 0)] * 3
    assert out.queue == ["s2", "s3"]
    assert out.messages[-3:] == ["1 step, all succeeded on every sub-node:",
                                 "  step 1 's1': 3 ok", "interrupted by Ctrl-c"]
    assert out.status == 130


def test_sigterm_terminates_the_current_step(tmp_path):
    out = broadcast(tmp_path, scripts={"s1": FakeJob(hang=True)},
                    actions=[when_started("s1", sigterm, nth=3)])

    assert [(job.command, job.status) for job in out.jobs] == [("s1", 143)] * 3
    assert "step 1 's1': 3 of 3 sub-nodes failed:" in out.messages
    assert out.queue == ["s2", "s3"]
    assert out.messages[-1] == "terminated by SIGTERM"
    assert out.status == 143


def test_a_lost_sub_node_takes_no_further_steps(tmp_path):
    out = broadcast(tmp_path, scripts={("node-2", "s1"): FakeJob(lost_after=0)})

    assert "[node-2]: connection lost; it takes no further steps" in out.messages
    assert out.interrupted == [{"command": "s1"}]
    assert [node for node, _ in out.interrupted_for] == ["[node-2]"]
    assert out.ran("[node-2]") == ["s1"]
    assert out.ran("[node-1]") == out.ran("[node-3]") == STEPS
    assert ("step 2 's2': all 2 sub-nodes succeeded; not run on [node-2] (connection "
            "lost in step 1)") in out.messages
    assert [host for host, _ in out.connects] == THREE  # lock-step: no reconnecting
    assert out.status == 1


def test_the_summary_names_a_lost_sub_node_in_every_step_it_missed(tmp_path):
    out = broadcast(tmp_path, scripts={("node-2", "s1"): FakeJob(lost_after=0)})

    assert out.messages[-3:] == [
        "3 steps, 1 with failures, 2 not run on every sub-node:",
        "  step 1 's1': 2 ok, 1 failed: [node-2] connection lost, outcome unknown "
        "(fake: connection reset by peer)",
        "  steps 2-3 ('s2' ... 's3'): 2 ok each; not run on [node-2] (connection lost "
        "in step 1)"]


def test_a_sub_node_that_stops_answering_between_steps_misses_the_rest(tmp_path):
    """It ran step 1 to its end; the summary says it did not run the later steps,
    and why, beside the failures of the others."""
    out = broadcast(tmp_path, nodes=THREE + ["node-4"], queue=STEPS + ["s4"],
                    scripts={("node-4", "s3"): FakeJob(exit=1)},
                    actions=[when_finished("s1", stops_answering("node-3"), nth=4)])

    assert out.ran("[node-3]") == ["s1"]
    assert "[node-3]: not responding; it takes no further steps" in out.messages
    assert out.messages[-5:] == [
        "4 steps, 1 with failures, 3 not run on every sub-node:",
        "  step 1 's1': 4 ok",
        "  step 2 's2': 3 ok; not run on [node-3] (not responding in step 1)",
        "  step 3 's3': 2 ok, 1 failed: [node-4] exit 1; not run on [node-3] (not "
        "responding in step 1)",
        "  step 4 's4': 3 ok; not run on [node-3] (not responding in step 1)"]
    assert out.status == 1


def test_error_aborts_stops_when_a_sub_node_is_left_out(tmp_path):
    """-e: a sub-node that can take no further steps stops the run as a failed step
    does; the next step is not taken (it would run out of lock-step)."""
    out = broadcast(tmp_path, error_aborts=True,
                    actions=[when_finished("s1", stops_answering("node-3"), nth=3)])

    assert all(out.ran(label) == ["s1"] for label in LABELS)
    assert ("--error-aborts: [node-3] not responding in step 1, so no more entries "
            "are taken") in out.messages
    assert out.queue == ["s2", "s3"]
    assert out.status == 1


def test_many_sub_nodes_left_out_are_grouped_by_why_and_counted(tmp_path):
    nodes = [{"hostname": "big", "gpu": [str(i) for i in range(7)]}, "node-1"]
    out = broadcast(tmp_path, nodes=nodes, queue=["s1", "s2"],
                    actions=[when_finished("s1", stops_answering("big"), nth=8)])

    assert out.messages[-1] == (
        "  step 2 's2': 1 ok; not run on 7 sub-nodes: [big (gpu=0)], [big (gpu=1)], "
        "[big (gpu=2)], [big (gpu=3)], [big (gpu=4)] and 2 more (not responding in step 1)")
    assert out.status == 1  # no job failed, but step 2 did not run everywhere


def test_a_step_that_could_not_be_sent_to_a_sub_node_fails_there(tmp_path):
    out = broadcast(tmp_path, scripts={("node-1", "s1"): FakeJob(not_started=True)},
                    hosts={"node-1": [Answer.OK, Answer.DOWN]})

    assert "step 1 's1': 1 of 3 sub-nodes failed:" in out.messages
    assert out.ran("[node-1]") == []
    assert out.ran("[node-2]") == out.ran("[node-3]") == STEPS
    assert out.queue == []  # the others ran it: it is not put back
    assert out.interrupted == []  # it never ran there
    assert out.status == 1


def test_a_step_that_could_not_be_sent_is_not_said_to_be_put_back(tmp_path):
    out = broadcast(tmp_path, queue=["s1"],
                    scripts={("node-1", "s1"): FakeJob(not_started=True)})

    assert out.queue == []
    assert not any("put back in the queue" in line for line in out.output.splitlines())


def test_a_daemon_broadcasts_an_entry_added_while_it_waits(tmp_path):
    out = broadcast(tmp_path, queue=["s1"], daemon=True,
                    actions=[when_queue_empty(deferred(append("- late\n"))),
                             when_finished("late", ctrl_c, nth=3)])

    assert all(out.ran(label) == ["s1", "late"] for label in LABELS)
    assert out.queue == []
    assert out.status == 130


def test_a_bad_entry_stops_broadcast_after_the_steps_before_it(tmp_path):
    out = broadcast(tmp_path, queue=["s1", "echo {{ nope }}", "s3"])

    assert all(out.ran(label) == ["s1"] for label in LABELS)
    assert out.queue == ["echo {{ nope }}", "s3"]
    assert out.status == 2
