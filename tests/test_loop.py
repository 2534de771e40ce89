"""Queue mode's loop on fake hosts: every behaviour of README.md in well under a second.

Each test scripts its jobs and hosts (``fakes``), drives the run with actions
at points of it (a job starts, Pegasus prints something, a take finds the
queue empty), and checks what a user would: the exit status, what Pegasus
printed, queue.yaml, consumed.yaml and interrupted.yaml afterwards, and
which sub-node ran what in which order. Only ``fakes`` knows how a loop is
built and driven.
"""
import pytest

from fakes import (Answer, FakeJob, append, ctrl_c, deferred, free_queue_lock,
                   hold_queue_lock, release, resume_output_after, rewrite, run_app, run_loop,
                   sigterm, snapshot, stall_output, when_bad_entry, when_finished,
                   when_printed, when_queue_empty, when_started)

TWO = ["node-1", "node-2"]
GRID = [{"hostname": ["node-1", "node-2"], "gpu": ["0", "1"]}]  # two hosts, two slots each
BAD = "echo {{ nope }}"  # names a parameter no sub-node defines
LOST = "connection lost, outcome unknown (fake: connection reset by peer)"


def entries(*commands):
    """The canonical entries consumed.yaml and interrupted.yaml hold for commands."""
    return [{"command": command} for command in commands]


# ---------------------------------------------------------------- a host listed twice

def test_a_host_listed_twice_runs_two_jobs_at_once_and_records_each(tmp_path):
    """Two identical jobs lost at once on the two sub-nodes of `- node-1` listed
    twice: both are in interrupted.yaml, each under its own label."""
    out = run_loop(tmp_path, nodes=["node-1", "node-1"], queue=["a", "a"],
                   scripts={"a": FakeJob(hang=True)},
                   actions=[when_started("a", deferred(release("a")), nth=2)])

    assert [(job.node, job.command) for job in out.jobs] == [
        ("[node-1#1]", "a"), ("[node-1#2]", "a")]
    assert out.runs_of("a")[1].start < out.runs_of("a")[0].end  # at once
    assert out.taken_for == ["[node-1#1]", "[node-1#2]"]
    assert out.lines("[node-1#2]")[0] == "=== run #2 'a' ==="
    assert out.status == 0


def test_identical_jobs_lost_on_a_host_listed_twice_are_both_interrupted(tmp_path):
    out = run_loop(tmp_path, nodes=["node-1", "node-1"], queue=["a", "a"],
                   scripts={"a": FakeJob(lost_after=0)})

    assert out.interrupted == entries("a", "a")
    assert sorted(node for node, _ in out.interrupted_for) == ["[node-1#1]", "[node-1#2]"]
    assert out.status == 1


# ---------------------------------------------------------------- order and spreading

def test_each_entry_runs_once_in_queue_order(tmp_path):
    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b", "c", "d", "e"],
                   scripts={"a": FakeJob(duration=0.02)})  # the others pass it by

    assert out.status == 0
    assert [job.command for job in out.jobs] == ["a", "b", "c", "d", "e"]
    assert out.queue == []
    assert out.consumed == entries("a", "b", "c", "d", "e")
    assert out.taken_for == [job.node for job in out.jobs]
    assert out.messages == ["5 jobs, all succeeded"]


def test_jobs_spread_over_hosts_before_a_host_gets_a_second(tmp_path):
    out = run_loop(tmp_path, nodes=GRID, queue=["a", "b", "c", "d"])

    assert out.ran("[node-1 (gpu=0)]") == ["a"]
    assert out.ran("[node-2 (gpu=0)]") == ["b"]
    assert out.ran("[node-1 (gpu=1)]") == ["c"]
    assert out.ran("[node-2 (gpu=1)]") == ["d"]
    assert out.status == 0


def test_an_expanded_entry_leaves_its_other_jobs_at_the_head(tmp_path):
    sweep = {"command": "train --bs {{ bs }}", "bs": ["8", "16", "32"]}
    out = run_loop(tmp_path, queue=[sweep, "after"],
                   actions=[when_started("train --bs 8", snapshot("while the first runs"))])

    assert out.snapshots["while the first runs"] == [
        {"command": "train --bs {{ bs }}", "bs": "16"},
        {"command": "train --bs {{ bs }}", "bs": "32"}, "after"]
    assert out.ran("[node-1]") == ["train --bs 8", "train --bs 16", "train --bs 32",
                                   "after"]
    assert out.consumed[0] == {"command": "train --bs {{ bs }}", "bs": "8"}
    assert out.status == 0


def test_job_output_is_printed_by_line_under_its_sub_node(tmp_path):
    talk = FakeJob(chunks=(("stdout", b"hel"), ("stdout", b"lo\nwor"),
                           ("stderr", b"oops\n"), ("stdout", b"ld")))
    out = run_loop(tmp_path, queue=["talk"], scripts={"talk": talk})

    assert out.lines("[node-1]") == ["=== run #1 'talk' ===", "hello", "oops", "world",
                                     "=== done (exit 0) ==="]


def test_running_jobs_hear_a_heartbeat(tmp_path):
    out = run_loop(tmp_path, queue=["long"], scripts={"long": FakeJob(heartbeats=2)})

    assert out.status == 0  # it ends only after hearing two
    assert out.called("heartbeat").count(("[node-1]", "long")) >= 2


# ---------------------------------------------------------------- daemon mode

def test_daemon_runs_an_entry_added_while_it_waits(tmp_path):
    out = run_loop(tmp_path, queue=["a"], daemon=True,
                   actions=[when_queue_empty(deferred(append("- late\n"))),
                            when_finished("late", ctrl_c)])

    assert out.ran("[node-1]") == ["a", "late"]
    assert out.consumed == entries("a", "late")
    assert out.queue == []
    assert out.status == 130


def test_daemon_runs_an_entry_added_just_as_it_found_the_queue_empty(tmp_path):
    out = run_loop(tmp_path, queue=["a"], daemon=True, timeout=0.3,
                   actions=[when_queue_empty(append("- late\n")),
                            when_finished("late", ctrl_c)])

    assert out.ran("[node-1]") == ["a", "late"]


def test_daemon_waits_at_a_bad_entry_until_it_is_fixed(tmp_path):
    out = run_loop(tmp_path, queue=["a", BAD, "c"], daemon=True,
                   actions=[when_bad_entry(snapshot("stuck"), deferred(append("- d\n"))),
                            when_bad_entry(deferred(rewrite(["echo fixed", "c", "d"])),
                                           nth=2),
                            when_finished("d", ctrl_c)])

    assert out.snapshots["stuck"] == [BAD, "c"]
    said = [m for m in out.messages if "entry 1" in m and "nope" in m]
    assert len(said) == 1, out.output  # once, though it was found twice
    assert "(this entry stays in the queue; fix the file: Pegasus waits and reads it again)" \
        in out.messages
    assert out.ran("[node-1]") == ["a", "echo fixed", "c", "d"]
    assert out.queue == []
    assert out.status == 130


def test_daemon_reads_a_bad_head_fixed_just_as_the_take_found_it(tmp_path):
    """The file is replaced between the take that found the bad entry (lock
    released) and the loop's note of the file it saw: that note is of the bad file."""
    out = run_loop(tmp_path, queue=[BAD], daemon=True,
                   actions=[when_bad_entry(rewrite(["echo fixed"])),
                            when_finished("echo fixed", ctrl_c)])

    assert out.ran("[node-1]") == ["echo fixed"]
    assert out.status == 130


# ---------------------------------------------------------------- exit statuses

@pytest.mark.parametrize("script, status, summary", [
    (FakeJob(), 0, ["1 job, all succeeded"]),
    (FakeJob(exit=3), 1, ["1 job, 1 failed:", "  [node-1] #1 'job' (exit 3)"]),
    (FakeJob(signal=9), 1, ["1 job, 1 failed:",
                            "  [node-1] #1 'job' (exit 137 (killed by SIGKILL))"]),
    (FakeJob(lost_after=0), 1, ["1 job, 1 failed:", f"  [node-1] #1 'job' ({LOST})"]),
], ids=["succeeded", "failed", "killed", "lost"])
def test_exit_status_says_how_the_jobs_went(tmp_path, script, status, summary):
    out = run_loop(tmp_path, queue=["job"], scripts={"job": script})

    assert out.status == status
    assert out.messages[-len(summary):] == summary


def test_a_bad_entry_stops_taking_after_the_jobs_before_it(tmp_path):
    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b", "c"],
                   actions=[when_started("a", append(f"- {BAD}\n- d\n"))])

    assert sorted(job.command for job in out.jobs) == ["a", "b", "c"]
    assert all(job.status == 0 for job in out.jobs)
    assert out.queue == [BAD, "d"]
    assert out.consumed == entries("a", "b", "c")
    assert ("(this entry stays in the queue; no more entries are taken; fix it and run "
            "Pegasus again)") in out.messages
    assert out.status == 2


# ---------------------------------------------------------------- Ctrl-c and SIGTERM

def test_first_ctrl_c_lets_running_jobs_finish_and_takes_nothing_more(tmp_path):
    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b", "c", "d"],
                   scripts={"a": FakeJob(hang=True), "b": FakeJob(hang=True)},
                   actions=[when_started("b", ctrl_c),
                            when_printed("Ctrl-c again stops them",
                                         deferred(release("a"), release("b")))])

    assert [(job.command, job.status) for job in out.jobs] == [("a", 0), ("b", 0)]
    assert out.called("cancel") == []
    assert out.queue == ["c", "d"]
    assert out.consumed == entries("a", "b")
    assert out.messages == [
        "Ctrl-c: no new jobs will start and the queue file is left as it is; waiting "
        "for 2 running jobs to finish (Ctrl-c again stops them)",
        "2 jobs, all succeeded", "interrupted by Ctrl-c"]
    assert out.status == 130


def test_second_ctrl_c_terminates_running_jobs(tmp_path):
    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b", "c"],
                   scripts={"a": FakeJob(hang=True),
                            "b": FakeJob(hang=True, term_deaf=True)},
                   actions=[when_started("b", ctrl_c),
                            when_printed("Ctrl-c again stops them", ctrl_c)])

    assert [(job.command, job.status) for job in out.jobs] == [("a", 143), ("b", 137)]
    assert "stopping 2 running jobs" in out.messages
    assert out.messages[-4:] == ["2 jobs, 2 failed:",
                                 "  [node-1] #1 'a' (exit 143 (killed by SIGTERM))",
                                 "  [node-2] #2 'b' (exit 137 (killed by SIGKILL))",
                                 "interrupted by Ctrl-c"]
    assert out.queue == ["c"]
    assert out.interrupted == []  # their outcome is known
    assert out.status == 130


def test_a_job_stopped_while_a_stalled_reader_holds_its_output_is_not_lost(tmp_path):
    """`pegasus q | (sleep 8; cat)`, then SIGTERM: the job is stopped, but its
    reader waits for room in Pegasus's output. That wait is Pegasus's own, not a
    job that does not answer: it was given up on ("no answer ... after it was
    stopped", outcome unknown) although it ended killed (the adversarial review)."""
    flood = FakeJob(chunks=(("stdout", (b"x" * 99 + b"\n") * 655),) * 40, hang=True)
    out = run_loop(tmp_path, queue=["a"], scripts={"a": flood},
                   actions=[when_started("a", stall_output),
                            when_printed("[node-1] xxx", sigterm),
                            when_printed("stopping 1 running job", resume_output_after(0.2))])

    assert [(job.command, job.status) for job in out.jobs] == [("a", 143)], out.messages
    assert out.interrupted == []
    assert out.status == 143


def test_sigterm_terminates_running_jobs(tmp_path):
    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b", "c"],
                   scripts={"a": FakeJob(hang=True),
                            "b": FakeJob(hang=True, term_deaf=True)},
                   actions=[when_started("b", sigterm)])

    assert [(job.command, job.status) for job in out.jobs] == [("a", 143), ("b", 137)]
    assert out.messages[0] == "stopping 2 running jobs"
    assert out.messages[-1] == "terminated by SIGTERM"
    assert out.queue == ["c"]
    assert out.status == 143


@pytest.mark.parametrize("signal, status, said", [
    (ctrl_c, 130, "Ctrl-c: no new jobs will start and the queue file is left as it is; "
                  "no job is running"),
    (sigterm, 143, "no jobs ran"),  # nothing to stop: no "stopping 0 running jobs"
], ids=["ctrl-c", "sigterm"])
def test_an_idle_daemon_stops_at_once(tmp_path, signal, status, said):
    out = run_loop(tmp_path, queue=[], daemon=True, actions=[when_queue_empty(signal)])

    assert out.messages[0] == said
    assert not any("(s)" in line or " 0 running" in line for line in out.messages)
    assert out.jobs == []
    assert out.status == status


# ---------------------------------------------------------------- hosts that come and go

def test_a_host_lost_mid_job_comes_back_and_takes_jobs_again(tmp_path):
    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b", "c"],
                   scripts={"a": FakeJob(lost_after=0.01), "b": FakeJob(hang=True)},
                   hosts={"node-1": [Answer.OK, Answer.DOWN, Answer.OK]},
                   actions=[when_printed("host node-1: connected; taking jobs again",
                                         deferred(release("b")))])

    assert out.interrupted == entries("a")
    assert out.interrupted_for == [("[node-1]", LOST)]
    assert "host node-1: connection lost; its sub-nodes take no more jobs; " \
           "reconnecting in the background" in out.messages
    assert [answer for host, answer in out.connects if host == "node-1"] == [
        Answer.OK, Answer.DOWN, Answer.OK]
    assert out.ran("[node-1]") == ["a", "c"]  # a is not run again
    assert out.messages[-2:] == ["3 jobs, 1 failed:", f"  [node-1] #1 'a' ({LOST})"]
    assert out.status == 1


def test_a_host_down_at_start_joins_when_it_answers(tmp_path):
    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b"],
                   scripts={"a": FakeJob(hang=True)},
                   hosts={"node-1": [Answer.DOWN, Answer.OK]},
                   actions=[when_printed("host node-1: connected; taking jobs",
                                         deferred(release("a")))])

    assert out.ran("[node-2]") == ["a"]
    assert out.ran("[node-1]") == ["b"]
    assert out.status == 0


def test_a_host_whose_key_changed_is_left_out_and_the_rest_stays_queued(tmp_path):
    out = run_loop(tmp_path, queue=["a", "b"], scripts={"a": FakeJob(lost_after=0)},
                   hosts={"node-1": [Answer.OK, Answer.KEY_CHANGED]})

    assert "host node-1: fake: host key changed; it is left out for the rest of the " \
           "run" in out.messages
    assert "no usable sub-node is left; stopping" in out.messages
    assert out.queue == ["b"]
    assert out.interrupted == entries("a")
    assert out.status == 1


def test_a_host_ssh_config_now_refuses_is_left_out_not_retried(tmp_path):
    """ssh_config edited while running (a ProxyCommand added), or a daemon's new
    host with one: no retry can succeed. It was retried in the background for
    ever, the run waiting for it."""
    out = run_loop(tmp_path, queue=["a", "b"], scripts={"a": FakeJob(lost_after=0)},
                   hosts={"node-1": [Answer.OK, Answer.CONFIG]})

    assert "host node-1: fake: ProxyCommand is set in ssh_config; it is left out for " \
           "the rest of the run" in out.messages
    assert out.queue == ["b"]
    assert out.status == 1


def test_a_job_that_could_not_be_sent_goes_back_to_the_head(tmp_path):
    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b", "c"],
                   scripts={("node-1", "a"): FakeJob(not_started=True),
                            "b": FakeJob(hang=True)},
                   hosts={"node-1": [Answer.OK, Answer.DOWN]},
                   actions=[when_printed("host node-1: connection lost",
                                         snapshot("put back"), deferred(release("b")))])

    assert out.snapshots["put back"] == entries("a") + ["c"]
    assert [(job.command, job.status) for job in out.runs_of("a")] == [("a", 0)]
    assert out.ran("[node-2]") == ["b", "a", "c"]
    assert out.queue == []
    assert out.interrupted == []


def test_a_job_not_sent_while_lock_mode_holds_the_queue_does_not_hold_the_run(tmp_path):
    """A job that could not be sent goes back to the queue under the queue lock.
    While lock mode held that lock, the loop waited for it: a Ctrl-c went
    unanswered until the editor closed. Now the job waits for the next take (or
    the run's end), and the loop answers at once."""
    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b"],
                   scripts={("node-1", "a"): FakeJob(not_started=True),
                            "b": FakeJob(hang=True)},
                   hosts={"node-1": [Answer.OK, Answer.DOWN]},
                   actions=[when_started("b", hold_queue_lock, deferred(ctrl_c)),
                            when_printed("Ctrl-c: no new jobs", free_queue_lock, release("b"))])

    assert out.queue == entries("a")  # back at the head, as taken
    assert out.ran("[node-2]") == ["b"]
    assert out.interrupted == []
    assert out.status == 130


def test_a_job_put_back_and_then_run_is_not_a_failure(tmp_path):
    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b"],
                   scripts={("node-1", "a"): FakeJob(not_started=True)},
                   hosts={"node-1": [Answer.OK, Answer.DOWN]})

    assert out.messages[-1] == "2 jobs, all succeeded"
    assert out.status == 0


def test_a_local_sub_node_that_cannot_start_jobs_does_not_spin(tmp_path):
    out = run_loop(tmp_path, nodes=["localhost"], queue=["a"], timeout=0.3,
                   scripts={"a": FakeJob(not_started=True)})

    assert out.jobs == []  # the run ends; whether "a" is kept queued is open
    assert out.status == 1


# ---------------------------------------------------------------- before the loop: exit 3

@pytest.mark.parametrize("mode, hosts", [
    ("q", {"node-1": [Answer.DOWN], "node-2": [Answer.DOWN]}),
    ("q", {"node-1": [Answer.KEY_CHANGED]}),
    ("q", {"node-2": [Answer.LOGIN_REFUSED]}),
    ("b", {"node-2": [Answer.DOWN]}),
], ids=["queue-none-reachable", "queue-key-changed", "queue-login-refused",
        "broadcast-one-down"])
def test_unusable_hosts_exit_3_before_anything_is_taken(tmp_path, mode, hosts):
    out = run_app(tmp_path, mode, nodes=TWO, queue=["a", "b"], hosts=hosts)

    assert out.status == 3
    assert "so nothing was taken from the queue:" in out.output
    for host, answers in hosts.items():
        assert f"host {host}: fake: {answers[0].value}" in out.output
    assert out.jobs == []
    assert out.queue == ["a", "b"]
    assert out.consumed == []


def test_queue_mode_starts_on_the_hosts_it_reaches(tmp_path):
    out = run_app(tmp_path, nodes=TWO, queue=["a", "b"],
                  hosts={"node-1": [Answer.DOWN]})

    assert ("host node-1: fake: no answer; running on the other hosts and retrying "
            "this one in the background") in out.messages
    assert out.ran("[node-2]") == ["a", "b"]
    assert out.status == 0


def test_many_unreachable_hosts_are_summed_up_in_proper_words(tmp_path):
    down = [f"down-{i:02}" for i in range(1, 14)]
    out = run_app(tmp_path, nodes=down + ["node-1"], queue=["a", "b"],
                  hosts={host: [Answer.DOWN] for host in down})

    assert out.messages[:12] == (
        [f"host {host}: fake: no answer" for host in down[:10]] +
        ["... and 3 more hosts that cannot be reached",
         "running on the other hosts and retrying these 13 hosts in the background"])
    assert not any("this one" in line or "(s)" in line for line in out.messages)
    assert out.ran("[node-1]") == ["a", "b"]
    assert out.status == 0


def test_one_unreachable_host_in_broadcast_is_said_in_the_singular(tmp_path):
    out = run_app(tmp_path, "b", nodes=TWO, queue=["a"], hosts={"node-2": [Answer.DOWN]})

    assert out.messages[0] == "cannot use 1 host, so nothing was taken from the queue:"
    assert out.status == 3


def test_the_summary_lists_failed_jobs_in_queue_order(tmp_path):
    out = run_loop(tmp_path, nodes=("n1", "n2", "n3"), queue=["a", "b", "c"],
                   scripts={"a": FakeJob(hang=True, exit=3), "b": FakeJob(hang=True, exit=4),
                            "c": FakeJob(exit=5)},
                   actions=[when_finished("c", release("b")),
                            when_finished("b", release("a"))])

    summary = out.messages[out.messages.index("3 jobs, 3 failed:") + 1:]
    assert [row.split("'")[1] for row in summary] == ["a", "b", "c"]


# ---------------------------------------------------------------- what a syntax error says

SYNTAX = "- a\n- [\n"  # entry 2 is a YAML syntax error
RUN_AGAIN = "fix the file and run again"
WAITS = "fix the file: Pegasus waits and reads it again"


@pytest.mark.parametrize("mode", ["q", "b"])
def test_a_yaml_syntax_error_at_start_says_to_fix_and_run_again(tmp_path, mode):
    out = run_app(tmp_path, mode, queue=SYNTAX)

    assert out.status == 2
    assert out.jobs == []
    assert "queue.yaml:2 (entry 2): YAML syntax error: " in out.output
    assert RUN_AGAIN in out.output and WAITS not in out.output


@pytest.mark.parametrize("mode", ["q", "b"])
def test_a_daemon_says_it_waits_for_a_yaml_syntax_error_to_be_fixed(tmp_path, mode):
    out = run_app(tmp_path, mode, queue=SYNTAX, daemon=True,
                  actions=[when_bad_entry(deferred(rewrite(["fixed"]))),
                           when_finished("fixed", ctrl_c)])

    assert "run again" not in out.output, out.output
    assert out.output.count(WAITS) == 2, out.output  # at start, then at the entry
    assert "(daemon mode: the entries before it run first; " + WAITS in out.output
    assert "(this entry stays in the queue; " + WAITS in out.output
    assert [job.command for job in out.jobs] == ["a", "fixed"]
    assert out.status == 130


@pytest.mark.parametrize("mode", ["q", "b"])
def test_a_yaml_syntax_error_found_mid_run_says_once_to_run_again(tmp_path, mode):
    out = run_app(tmp_path, mode, queue=["a", "b"],
                  actions=[when_started("a", append("- [\n"))])

    assert "queue.yaml:1 (entry 1): YAML syntax error: " in out.output, out.output
    assert out.output.count("run Pegasus again") == 1, out.output
    assert RUN_AGAIN not in out.output  # the same advice, said once
    assert [job.command for job in out.jobs] == ["a", "b"]
    assert out.status == 2
