"""``slurm:`` entries without a Slurm cluster (issue 17): hosts.yaml parsing and its
errors, the srun command line, placement, {{slots}}, missing Slurm commands."""
import gevent
import pytest

from helpers import read, setup
from pegasus import expand, hostsfile, slurmentry
from pegasus.errors import InputError
from pegasus.model import Job, Partition, SubNode
from pegasus.scheduler import Scheduler
from pegasus.slurm import SlurmExecutor


def load(tmp_path, text):
    (tmp_path / "hosts.yaml").write_text(text)
    return hostsfile.load(str(tmp_path / "hosts.yaml"))


def test_an_entry_is_jobs_lanes_with_its_partition_and_options(tmp_path):
    nodes = load(tmp_path, "- node-1\n- slurm: gpu\n  jobs: 3\n"
                           "  options: --qos=normal --comment='a b'\n")
    lanes = nodes[1:]
    assert [n.label for n in lanes] == ["[slurm:gpu/1]", "[slurm:gpu/2]", "[slurm:gpu/3]"]
    assert {n.slurm for n in lanes} == {Partition("gpu", ("--qos=normal", "--comment=a b"))}
    assert [n.index for n in nodes] == [0, 1, 2, 3]


def test_jobs_defaults_to_one(tmp_path):
    assert len(load(tmp_path, "- slurm: gpu\n")) == 1


@pytest.mark.parametrize("entry, words", [
    ("- slurm: gpu\n  slots: 4\n", "not 'slots'; Slurm allocates the GPUs: give jobs 'slots: N'"),
    ("- slurm: gpu\n  hostname: x\n", "takes only slurm, jobs, options, not 'hostname'"),
    ("- slurm: gpu\n  jobs: 0\n", "'jobs: 0' is not a number of jobs in flight"),
    ("- slurm: gpu\n  jobs: many\n", "'jobs: many' is not a number of jobs in flight"),
    ("- slurm: [a, b]\n", "'slurm' must be one plain value"),
    ("- slurm: --partition=gpu\n", "is not a partition name"),
    ("- slurm: gpu\n  options: --comment='a\n", "cannot be read as shell words"),
    ("- slurm: gpu\n  options: python train.py\n", "'python' is not an srun option"),
    ("- slurm: gpu\n  options: --qos=high python\n", "'python' is not an srun option"),
    ("- slurm: gpu\n  options: -A lab -c1 x\n", "'x' is not an srun option"),
])
def test_bad_entries_name_the_file_entry_and_what_to_do(tmp_path, entry, words):
    with pytest.raises(InputError) as err:
        load(tmp_path, "- node-1\n" + entry)
    message = str(err.value)
    assert words in message
    assert str(tmp_path / "hosts.yaml") in message and "entry 2" in message


def test_a_bad_entry_is_bad_input_for_the_command(tmp_path, run_in_process):
    setup(tmp_path, "- slurm: gpu\n  slots: 2\n", ["echo hi"])
    done = run_in_process(["q"], tmp_path)
    assert done.returncode == 2
    assert "Slurm allocates the GPUs" in done.stdout + done.stderr
    assert read(tmp_path / "queue.yaml") == "- echo hi\n"


def test_srun_argv_puts_the_job_settings_after_the_entry_options():
    argv = slurmentry.srun_argv(Partition("gpu", ("--qos=x", "--time=10")), "17", 2, 90.0,
                                "echo hi")
    assert argv == ["srun", "--partition=gpu", "--job-name=17", "--ntasks=1", "--qos=x",
                    "--time=10", "--gres=gpu:2", "--time=2", "sh", "-c", "echo hi"]
    assert slurmentry.srun_argv(Partition("cpu"), "pegasus", 0, None, "true") == [
        "srun", "--partition=cpu", "--job-name=pegasus", "--ntasks=1", "sh", "-c", "true"]


@pytest.mark.parametrize("seconds, minutes", [(1, "1"), (60, "1"), (61, "2"), (3600, "60")])
def test_time_limit_rounds_up_to_whole_minutes(seconds, minutes):
    assert slurmentry.time_limit(seconds) == minutes


def test_slots_and_hostname_render_as_what_srun_sets():
    lane = SubNode(0, "slurm:gpu", slurm=Partition("gpu"))
    job = Job("run --gpus {{slots}} on {{hostname}}", (("slots", "2"),))
    assert expand.render(job, slurmentry.placed(lane, job)) == \
        "run --gpus ${CUDA_VISIBLE_DEVICES-} on ${SLURMD_NODENAME-}"


def test_a_job_of_more_gpus_than_any_host_has_may_go_to_slurm():
    nodes = [SubNode(0, "node-1", slot_count=2), SubNode(1, "slurm:gpu", slurm=Partition("gpu"))]
    expand.checker(nodes)(Job("x", (("slots", "8"),)))  # Slurm says itself if it cannot
    with pytest.raises(InputError):
        expand.checker(nodes)(Job("x", (("slots", "0"),)))


def test_multi_gpu_jobs_take_free_slurm_lanes_and_hold_no_slots():
    lanes = [SubNode(i, "slurm:gpu", lane=i, slurm=Partition("gpu")) for i in range(3)]
    host = [SubNode(3 + i, "node-1", lane=i, slot_count=2) for i in range(2)]
    scheduler = Scheduler(lanes + host)
    plan = scheduler.plan()
    big = Job("x", (("slots", "4"),))
    placed = [plan.place(big) for _ in range(3)]
    assert [(n.hostname, n.lane, n.gpus) for n in placed] == [
        ("slurm:gpu", 0, 4), ("slurm:gpu", 1, 4), ("slurm:gpu", 2, 4)]
    scheduler.start(placed)  # no slot clash between lanes: Slurm holds the GPUs
    assert plan.place(big) is None  # every lane busy; node-1 has 2 slots only
    assert scheduler.plan().place(Job("y")).hostname == "node-1"


def test_without_slot_hosts_a_slurm_lane_carries_the_gpu_count():
    scheduler = Scheduler([SubNode(0, "slurm:gpu", slurm=Partition("gpu"))])
    assert scheduler.plan().place(Job("x", (("slots", "2"),))).gpus == 2
    assert scheduler.plan().place(Job("x")).gpus == 0


def test_srun_missing_fails_the_job_with_a_message(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    said = []
    executor = SlurmExecutor(Partition("gpu"))
    status = gevent.spawn(executor.run, "true", lambda s, b: said.append((s, b))).get()
    assert status == 127
    assert said == [("stderr", b"pegasus: srun not found on this machine's PATH; run "
                               b"Pegasus on a Slurm login node\n")]


def test_no_slurm_commands_here_stops_the_run_before_anything_is_taken(tmp_path, run_pegasus):
    setup(tmp_path, "- slurm: gpu\n", ["echo hi"])
    done = run_pegasus(["q"], tmp_path, env={"PATH": str(tmp_path)})
    said = done.stdout + done.stderr
    assert done.returncode == 3, said
    assert "host slurm:gpu: Slurm's commands are not on this machine's PATH" in said
    assert "Traceback" not in said
    assert read(tmp_path / "queue.yaml") == "- echo hi\n"


def test_beside_hosts_without_slots_a_multi_gpu_job_goes_to_slurm_or_waits():
    nodes = [SubNode(0, "node-1"), SubNode(1, "slurm:gpu", slurm=Partition("gpu"))]
    scheduler = Scheduler(nodes)
    plan = scheduler.plan()
    two = Job("x", (("slots", "2"),))
    first = plan.place(two)
    assert (first.hostname, first.gpus) == ("slurm:gpu", 2)
    assert plan.place(two) is None  # node-1 has one slot: it waits for Slurm's lane
    assert plan.place(Job("y", (("slots", "1"),))).hostname == "node-1"


def test_a_daemon_sees_a_slurm_entry_whose_options_changed_as_changed(tmp_path):
    """A changed ``options:`` (--qos, --account, --mem) must reach the jobs started
    after it: its lanes are removed and added again, not kept as they were."""
    from pegasus import hostswatch
    path = tmp_path / "hosts.yaml"
    path.write_text("- slurm: gpu\n  jobs: 2\n")
    source = hostswatch.Source.before_reading(str(path), False)
    before = source.read()
    path.write_text("- slurm: gpu\n  jobs: 2\n  options: --qos=high\n")
    added, removed = hostswatch.diff(before, source.read(), 10)
    assert len(removed) == 2 and len(added) == 2
    assert all(node.slurm.options == ("--qos=high",) for node in added)


def test_options_may_give_a_value_as_the_next_word_as_srun_takes_it(tmp_path):
    path = tmp_path / "hosts.yaml"
    path.write_text("- slurm: gpu\n  options: -c 1 --comment 'a b' -A lab --qos=normal --exclusive\n")
    from pegasus import hostsfile
    node = hostsfile.load(str(path))[0]
    assert node.slurm.options == ("-c", "1", "--comment", "a b", "-A", "lab", "--qos=normal",
                                  "--exclusive")


def test_leftovers_are_found_by_their_comment_and_a_failing_squeue_is_said(tmp_path,
                                                                          monkeypatch):
    """Without Slurm: squeue and scancel stand-ins on PATH. Only this queue's
    interrupted jobs are cancelled; squeue refusing is said, nothing cancelled."""
    import os

    from pegasus import slurm
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cancelled = tmp_path / "cancelled"
    listing = "101 pegasus:k1:3\n102 pegasus:k1:4\n103 pegasus:other:3\n104 \n"
    (bin_dir / "squeue").write_text(f"#!/bin/sh\nprintf '{listing}'\n")
    (bin_dir / "scancel").write_text(f'#!/bin/sh\necho "$@" >> {cancelled}\n')
    for tool in ("squeue", "scancel"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    said = []
    slurm.cancel_leftovers("k1", [3, 9], said.append)
    assert cancelled.read_text().split() == ["101"]
    assert said == ["job #3 outlived the Pegasus that started it (Slurm job 101): cancelled"]

    (bin_dir / "squeue").write_text("#!/bin/sh\necho 'squeue: error: Invalid user' >&2\nexit 1\n")
    said.clear()
    slurm.cancel_leftovers("k1", [3], said.append)
    assert cancelled.read_text().split() == ["101"]  # nothing more
    assert "squeue: error: Invalid user" in said[0]
