"""Job ids (issue 12): unique for a queue file, increasing across runs, shown
in the job frame, consumed.yaml, interrupted.yaml and ``{{job_id}}``."""
import re

from fakes import FakeJob, run_app, run_loop
from helpers import read

FRAME_ID = re.compile(r"=== run #(\d+) '")


def frame_ids(output):
    return [int(n) for n in FRAME_ID.findall(output)]


def test_ids_count_from_1_and_go_on_in_the_next_run(tmp_path):
    first = run_loop(tmp_path, queue=["a", "b"])
    second = run_loop(tmp_path, queue=["c"])

    assert first.taken_ids == [1, 2] and frame_ids(first.output) == [1, 2]
    assert "[node-1] === run #1 'a' ===" in first.output
    assert second.taken_ids == [1, 2, 3]  # consumed.yaml keeps the first run's records
    assert frame_ids(second.output) == [3]
    assert read(tmp_path / "consumed.yaml").count("#3 for [node-1]\n") == 1


def test_a_command_names_its_own_id(tmp_path):
    out = run_app(tmp_path, queue=["out-{{job_id}}.txt", "out-{{ job_id }}-{{hostname}}"])

    assert out.status == 0, out.output
    assert [job.command for job in out.jobs] == ["out-1.txt", "out-2-node-1"]
    assert out.consumed == [{"command": "out-{{job_id}}.txt"},
                            {"command": "out-{{ job_id }}-{{hostname}}"}]


def test_broadcast_gives_one_id_per_step_on_every_sub_node(tmp_path):
    out = run_loop(tmp_path, "b", nodes=["n1", "n2"], queue=["echo {{job_id}}", "b"])

    assert sorted(job.command for job in out.jobs if job.command.startswith("echo")) == [
        "echo 1", "echo 1"]
    assert out.taken_ids == [1, 2]
    assert out.lines("[n1]")[0] == "=== run #1 'echo 1' ==="
    assert out.lines("[n2]")[0] == "=== run #1 'echo 1' ==="


def test_interrupted_yaml_names_the_lost_jobs_id(tmp_path):
    out = run_loop(tmp_path, queue=["a", "b"], scripts={"b": FakeJob(lost_after=0)})

    assert out.interrupted_ids == [2]
    assert out.interrupted == [{"command": "b"}]


def test_a_job_put_back_gets_a_new_id_when_taken_again(tmp_path):
    out = run_loop(tmp_path, queue=["a"], scripts={"a": [FakeJob(not_started=True),
                                                         FakeJob()]})

    assert out.status == 0, out.output
    assert out.taken_ids == [1, 2]  # taken twice; id 1 was never run
    assert frame_ids(out.output) == [1, 2]


def test_a_broken_id_counter_stops_the_run_with_its_name(tmp_path):
    counter = tmp_path / ".queue.yaml.job-id"
    counter.write_text("twelve\n")
    out = run_app(tmp_path, queue=["a"])

    assert out.status == 74, out.output
    assert f"{counter}: holds 'twelve', not the next job id" in out.output
    assert out.queue == ["a"] and out.jobs == []
