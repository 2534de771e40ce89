"""failed.yaml and ``pegasus requeue --failed [--dry-run]`` (issue 13), on fake hosts.

Every job that ends failed, killed or timed out is appended to failed.yaml
beside the queue (canonical entry, after a comment saying when, where and
how); ``requeue --failed`` moves them to the head of the queue.
"""
import re

import yaml

from fakes import FakeJob, run_loop
from pegasus import cli

HEADER = re.compile(r"^# failed \d{4}-\d\d-\d\d \d\d:\d\d:\d\d #(\d+) for (.*?): (.*)$", re.M)


def failed_records(tmp_path):
    """(job id, where, why) of each record of failed.yaml, and its entries."""
    text = (tmp_path / "failed.yaml").read_text()
    return HEADER.findall(text), yaml.load(text, Loader=yaml.BaseLoader)


def test_failed_killed_and_timed_out_jobs_go_to_failed_yaml(tmp_path):
    out = run_loop(tmp_path, queue=["ok", "bad", "killed", {"command": "slow", "timeout": "0.05"},
                                    "lost"],
                   scripts={"bad": FakeJob(exit=3), "killed": FakeJob(signal=9),
                            "slow": FakeJob(hang=True), "lost": FakeJob(lost_after=0)})

    headers, entries = failed_records(tmp_path)
    assert entries == [{"command": "bad"}, {"command": "killed"},
                       {"command": "slow", "timeout": "0.05"}]
    assert headers == [("2", "[node-1]", "exit 3"),
                       ("3", "[node-1]", "exit 137 (killed by SIGKILL)"),
                       ("4", "[node-1]", "timed out after 0.05s, exit 124")]
    assert out.interrupted == [{"command": "lost"}]  # outcome unknown: not failed
    assert out.status == 1


def test_a_run_where_everything_succeeds_writes_no_failed_yaml(tmp_path):
    run_loop(tmp_path, queue=["a", "b"])

    assert not (tmp_path / "failed.yaml").exists()


def test_broadcast_records_a_failed_step_once_with_its_sub_nodes(tmp_path):
    run_loop(tmp_path, mode="b", nodes=["node-1", "node-2", "node-3"], queue=["a", "b"],
             scripts={("node-2", "a"): FakeJob(exit=1), ("node-3", "a"): FakeJob(exit=2)})

    headers, entries = failed_records(tmp_path)
    assert entries == [{"command": "a"}]
    assert headers == [("1", "[node-2], [node-3]", "exit 1; exit 2")]


def requeue(tmp_path, capsys, *options):
    status = cli.main(["requeue", "-Q", str(tmp_path / "queue.yaml"), *options])
    return status, capsys.readouterr().out


def test_requeue_failed_moves_them_to_the_head_of_the_queue(tmp_path, capsys):
    run_loop(tmp_path, queue=["bad", {"command": "slow", "timeout": "0.05"}, "ok"],
             scripts={"bad": FakeJob(exit=3), "slow": FakeJob(hang=True)}, nodes=["n1"])
    (tmp_path / "queue.yaml").write_text("- later  # stays as typed\n")
    (tmp_path / "interrupted.yaml").write_text("- lost\n")

    status, said = requeue(tmp_path, capsys, "--failed")

    assert status == 0
    assert "pegasus: 2 failed jobs moved from" in said
    queue = (tmp_path / "queue.yaml").read_text()
    assert yaml.load(queue, Loader=yaml.BaseLoader) == [
        {"command": "bad"}, {"command": "slow", "timeout": "0.05"}, "later"]
    assert queue.endswith("- later  # stays as typed\n")
    assert (tmp_path / "failed.yaml").read_text() == ""
    assert (tmp_path / "interrupted.yaml").read_text() == "- lost\n"  # not touched


def test_requeue_failed_dry_run_shows_them_and_changes_nothing(tmp_path, capsys):
    run_loop(tmp_path, queue=["bad", "ok"], scripts={"bad": FakeJob(exit=3)})
    (tmp_path / "queue.yaml").write_text("- later\n")
    failed_before = (tmp_path / "failed.yaml").read_text()

    status, said = requeue(tmp_path, capsys, "--failed", "--dry-run")

    assert status == 0
    assert said.splitlines() == [
        f"pegasus: --dry-run: 1 failed job would move from {tmp_path / 'failed.yaml'} to "
        f"the head of {tmp_path / 'queue.yaml'}:",
        "pegasus: - command: bad", "pegasus: (nothing changed)"]
    assert (tmp_path / "queue.yaml").read_text() == "- later\n"
    assert (tmp_path / "failed.yaml").read_text() == failed_before


def test_requeue_dry_run_of_interrupted_jobs(tmp_path, capsys):
    (tmp_path / "queue.yaml").write_text("")
    (tmp_path / "interrupted.yaml").write_text("# interrupted ...\n- lost\n")

    status, said = requeue(tmp_path, capsys, "--dry-run")

    assert status == 0
    assert "--dry-run: 1 interrupted job would move" in said
    assert (tmp_path / "interrupted.yaml").read_text() == "# interrupted ...\n- lost\n"


def test_failed_is_for_requeue_and_dry_run_not_for_lock_mode(tmp_path, capsys):
    """Options a mode would ignore are usage errors (``q --dry-run`` is a dry run)."""
    assert cli.main(["q", "--failed"]) == 2
    assert "--failed is for requeue" in capsys.readouterr().err
    assert cli.main(["l", "--dry-run"]) == 2
    assert "--dry-run is for queue and broadcast modes (q, b) and requeue" in (
        capsys.readouterr().err)
