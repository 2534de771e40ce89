"""Host selection (issue 15): ``--limit``/``--exclude`` patterns, failed-hosts.txt
and unreachable-hosts.txt, ``--skip-unreachable``; in-process, on fakes."""

import os
import stat

import pytest

from fakes import Answer, FakeJob, ctrl_c, run_app, run_loop, when_started
from helpers import queue_entries, read, run_in_process
from pegasus import selection
from pegasus.errors import UsageError

NAMES = ["node-1", "node-2", "node-3", "node-10", "node01", "node02", "node10", "gpu-a",
         "localhost"]


def chosen(*limit, exclude=()):
    sel = selection.Selection(tuple(selection.parse("--limit", p) for p in limit),
                              tuple(selection.parse("--exclude", p) for p in exclude))

    class Node:
        def __init__(self, hostname):
            self.hostname = hostname
    return [n.hostname for n in selection.select([Node(h) for h in NAMES], sel, "hosts.yaml")]


@pytest.mark.parametrize("patterns, names", [
    (["node-*"], ["node-1", "node-2", "node-3", "node-10"]),
    (["node-?"], ["node-1", "node-2", "node-3"]),
    (["node-[1-2,10]"], ["node-1", "node-2", "node-10"]),
    (["node-[1-10]"], ["node-1", "node-2", "node-3", "node-10"]),
    (["node[01-10]"], ["node01", "node02", "node10"]),  # padded: not node-1's '1'
    (["node[1-9]"], []),  # not padded: node01 is not node1
    (["node[1-10]"], ["node10"]),
    (["gpu-[a-c]"], ["gpu-a"]),  # a glob's own brackets
    (["node-[!1]*"], ["node-2", "node-3"]),
    (["node-1,localhost"], ["node-1", "localhost"]),
    (["node-1", "node-[2-3]"], ["node-1", "node-2", "node-3"]),
])
def test_limit_patterns(patterns, names):
    if not names:
        with pytest.raises(UsageError, match="matches no host"):
            chosen(*patterns)
        return
    assert chosen(*patterns) == names


def test_exclude_without_limit_keeps_the_others():
    assert chosen(exclude=["node*", "gpu-a"]) == ["localhost"]
    assert chosen("node-*", exclude=["node-[2-10]"]) == ["node-1"]


def test_a_selection_that_leaves_no_host_names_them_all():
    with pytest.raises(UsageError) as err:
        chosen("node-1", exclude=["node-1"])
    assert str(err.value) == ("--limit 'node-1' --exclude 'node-1' leave no host of hosts.yaml "
                              "(its hosts: node-[1-3,10], node[01-02,10], gpu-a, localhost)")
    with pytest.raises(UsageError) as err:
        chosen(exclude=["*"])
    assert str(err.value).startswith("--exclude '*' leaves no host of hosts.yaml")


@pytest.mark.parametrize("text, words", [
    ("node[5-1]", "--limit 'node[5-1]': the range 5-1 runs backwards"),
    ("node[1-", "--limit 'node[1-': '[' without its ']'"),
    (",", "--limit ',': no host pattern given"),
    ("@missing.txt", "--limit @missing.txt: no such file (Pegasus writes failed-hosts.txt"),
])
def test_bad_patterns_are_usage_errors(text, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as err:
        selection.parse("--limit", text)
    assert str(err.value).startswith(words)


def test_a_host_file_has_one_pattern_a_line_and_comments(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# from the last run\nnode-2\n\n  node-[01-02]  # padded\nnode-10#x\n")
    assert chosen(f"@{path}") == ["node-2", "node-10"]
    path.write_text("# nothing\n\n")
    with pytest.raises(UsageError, match="the file lists no hosts"):
        selection.parse("--limit", f"@{path}")


def test_fold_writes_numbered_names_as_ranges():
    assert selection.fold(["n-1", "n-2", "n-3", "n-5", "x", "g01", "g02", "n-4x"]) == \
        "n-[1-3,5], x, g[01-02], n-4x"
    assert selection.fold([f"n{i}" for i in range(20)] + ["a", "b"], shown=2) == \
        "n[0-19], a and 1 more"


# ---------------------------------------------------------------- the command line

HOSTS = "- node-a.invalid\n- node-b.invalid\n- other.invalid\n"


@pytest.mark.parametrize("args, words", [
    (["l", "--limit", "node-*"], "--limit is for queue and broadcast modes (q, b)"),
    (["requeue", "--exclude", "x"], "--exclude is for queue and broadcast modes (q, b)"),
    (["q", "--skip-unreachable"], "--skip-unreachable is for broadcast mode (b); queue mode "
                                  "always starts with the hosts it can reach"),
])
def test_selection_options_elsewhere_are_usage_errors(args, words, tmp_path):
    done = run_in_process(args, tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"pegasus: {words}"), done.stderr


def test_dry_run_shows_only_the_selected_hosts(tmp_path):
    (tmp_path / "hosts.yaml").write_text(HOSTS)
    (tmp_path / "queue.yaml").write_text("- echo on {{hostname}}\n")
    done = run_in_process(["b", "--dry-run", "--limit", "node-*", "--exclude", "node-b*"],
                          tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "[node-a.invalid] echo on node-a.invalid"
    assert "1 sub-node: 1 command in all" in done.stdout


def test_a_pattern_matching_nothing_leaves_the_queue_as_it_is(tmp_path):
    (tmp_path / "hosts.yaml").write_text(HOSTS)
    (tmp_path / "queue.yaml").write_text("- echo hi\n")
    done = run_in_process(["q", "--exclude", "web-*"], tmp_path)
    assert done.returncode == 2
    assert done.stderr == ("pegasus: --exclude 'web-*' matches no host of hosts.yaml (its "
                           "hosts: node-a.invalid, node-b.invalid, other.invalid)\n")
    assert sorted(os.listdir(tmp_path)) == ["hosts.yaml", "queue.yaml"]  # nothing made


# ---------------------------------------------------------------- the host lists

def test_failed_and_lost_hosts_are_listed_beside_the_queue(tmp_path):
    out = run_loop(tmp_path, nodes=["node-1", "node-2", "node-3"], queue=["a", "b", "c"],
                   scripts={("node-1", "a"): FakeJob(exit=3, duration=0.1),
                            ("node-2", "a"): FakeJob(exit=3),
                            ("node-3", "a"): FakeJob(lost_after=0.0)}, mode="b")
    assert out.status == 1
    failed, unreachable = tmp_path / "failed-hosts.txt", tmp_path / "unreachable-hosts.txt"
    assert read(failed) == "node-1\nnode-2\n"
    assert read(unreachable) == "node-3\n"
    assert stat.S_IMODE(os.stat(failed).st_mode) == 0o600
    said = [m for m in out.messages if "listed in" in m]
    assert said == [
        f"2 hosts failed (node-[1-2]): listed in {failed}; to run on them only: "
        f"pegasus b --limit @{failed}",
        f"1 host unreachable or lost (node-3): listed in {unreachable}; once "
        f"they are back: pegasus b --limit @{unreachable}"]
    assert out.messages.index(said[-1]) < len(out.messages) - 1  # the summary comes last


def test_in_queue_mode_the_failed_hosts_words_point_at_failed_yaml(tmp_path):
    """Running the rest of the queue on the failed hosts (the broadcast advice)
    runs none of the failed jobs again: they are in failed.yaml."""
    out = run_loop(tmp_path, nodes=["node-1", "node-2"], queue=["a", "b"],
                   scripts={"a": FakeJob(exit=3)})
    failed = tmp_path / "failed-hosts.txt"
    said = [m for m in out.messages if "listed in" in m]
    assert said == [f"1 host failed (node-1): listed in {failed}; the failed jobs are in "
                    f"{tmp_path / 'failed.yaml'}: 'pegasus requeue --failed -Q "
                    f"{tmp_path / 'queue.yaml'}' puts them back in the queue"], out.output


def test_a_run_without_failures_removes_the_old_lists(tmp_path):
    (tmp_path / "failed-hosts.txt").write_text("node-9\n")
    (tmp_path / "unreachable-hosts.txt").write_text("node-8\n")
    out = run_loop(tmp_path, queue=["a"])
    assert out.status == 0
    assert not (tmp_path / "failed-hosts.txt").exists()
    assert not (tmp_path / "unreachable-hosts.txt").exists()
    assert not any("listed in" in m for m in out.messages)


def test_queue_mode_lists_a_host_never_reached(tmp_path):
    out = run_app(tmp_path, nodes=["node-1", "node-2"], queue=["a", "b"],
                  hosts={"node-2": [Answer.DOWN]})
    assert out.status == 0  # the jobs all ran, on node-1
    assert read(tmp_path / "unreachable-hosts.txt") == "node-2\n"
    # the hint names the files the run was given (-Q, -H): it works from where it ran
    assert (f"pegasus q -Q {tmp_path / 'queue.yaml'} -H {tmp_path / 'hosts.yaml'} "
            f"--limit @{tmp_path / 'unreachable-hosts.txt'}") in out.output


# ---------------------------------------------------------------- --skip-unreachable

def test_broadcast_without_skip_refuses_and_lists_the_unreachable(tmp_path):
    out = run_app(tmp_path, mode="b", nodes=["node-1", "node-2", "node-3"], queue=["a"],
                  hosts={"node-2": [Answer.DOWN], "node-3": [Answer.LOGIN_REFUSED]})
    assert out.status == 3
    assert out.jobs == []
    assert out.queue == ["a"]
    path = tmp_path / "unreachable-hosts.txt"
    assert read(path) == "node-2\nnode-3\n"
    assert (f"listed in {path}; to run without them: pegasus b -Q {tmp_path / 'queue.yaml'} "
            f"-H {tmp_path / 'hosts.yaml'} --exclude @{path} (or --skip-unreachable)") \
        in out.output


def test_skip_unreachable_broadcasts_to_the_others_and_counts_them_apart(tmp_path):
    out = run_app(tmp_path, mode="b", nodes=["node-1", "node-2", "node-3"], queue=["a", "b"],
                  hosts={"node-2": [Answer.DOWN]}, options=["--skip-unreachable"])
    assert out.status == 1
    assert out.ran("[node-1]") == out.ran("[node-3]") == ["a", "b"]
    assert out.ran("[node-2]") == []
    path = tmp_path / "unreachable-hosts.txt"
    assert read(path) == "node-2\n"
    assert out.messages[0] == "--skip-unreachable: skipping 1 host that cannot be reached:"
    assert out.messages[-4:] == [
        "2 steps, all succeeded on every sub-node:",
        "  step 1 'a': 2 ok",
        "  step 2 'b': 2 ok",
        "1 host skipped, unreachable at start (--skip-unreachable): node-2"]
    assert queue_entries(tmp_path / "queue.yaml") == []


def test_skip_unreachable_with_no_host_reached_is_still_a_refusal(tmp_path):
    out = run_app(tmp_path, mode="b", nodes=["node-1"], queue=["a"],
                  hosts={"node-1": [Answer.DOWN]}, options=["--skip-unreachable"])
    assert out.status == 3
    assert out.queue == ["a"]
    assert out.output.endswith(f"listed in {tmp_path / 'unreachable-hosts.txt'}\n")  # no
    assert "--exclude" not in out.output                     # advice to run without them


def test_skipped_hosts_and_a_ctrl_c_both_end_the_summary(tmp_path):
    out = run_app(tmp_path, mode="b", nodes=["node-1", "node-2"], queue=["a", "b"],
                  hosts={"node-2": [Answer.DOWN]}, options=["--skip-unreachable"],
                  actions=[when_started("a", ctrl_c)])
    assert out.status == 130
    assert out.output.splitlines()[-2:] == [
        "pegasus: 1 host skipped, unreachable at start (--skip-unreachable): node-2",
        "pegasus: interrupted by Ctrl-c"]
