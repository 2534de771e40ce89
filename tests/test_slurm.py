"""Pegasus on a real one-machine Slurm cluster (issue 17): real srun, real Pegasus.

Every test here uses the ``slurm_cluster`` fixture (conftest.py marks them
``slurm`` and ``sshd``); all are in this one file so that one xdist worker
starts the cluster.
"""
import os
import signal

import pytest
import yaml

from helpers import Pegasus, jobs_of, queue_entries, read, wait_for, write

PARTITION = "pegtest"


@pytest.fixture
def slurm(slurm_cluster, monkeypatch):
    """The session's Slurm cluster, its SLURM_CONF in this test's environment (and so
    in Pegasus's and srun's); no job of an earlier test left."""
    monkeypatch.setenv("SLURM_CONF", slurm_cluster.conf)
    wait_for(lambda: slurm_cluster.squeue() == "", what="an empty squeue")
    return slurm_cluster


def hosts(jobs=1, partition=PARTITION):
    return f"- slurm: {partition}\n  jobs: {jobs}\n"


def no_job_left(slurm, timeout=30):
    try:
        wait_for(lambda: slurm.squeue() == "", timeout=timeout, what="no job in squeue")
    except AssertionError as err:
        raise AssertionError(f"{err}\nsqueue:\n{slurm.squeue()}\n{slurm.log()}") from None


def setup(folder, hosts_text, entries):
    write(folder / "hosts.yaml", hosts_text)
    write(folder / "queue.yaml", yaml.safe_dump(entries, default_flow_style=False))


def test_twenty_jobs_with_jobs_4_each_run_once(slurm, tmp_path, run_pegasus):
    (tmp_path / "marks").mkdir()
    (tmp_path / "flight").mkdir()
    numbers = [str(n) for n in range(1, 21)]
    command = ("mkdir flight/{{n}}; ls flight | wc -l >> in-flight; "
               "echo {{job_id}} >> marks/{{n}}; rmdir flight/{{n}}")
    setup(tmp_path, hosts(jobs=4), [{"command": command, "n": numbers}])
    done = run_pegasus(["q"], tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(os.listdir(tmp_path / "marks"), key=int) == numbers
    for n in numbers:  # each job ran once
        assert len(read(tmp_path / "marks" / n).split()) == 1, n
    assert max(int(x) for x in read(tmp_path / "in-flight").split()) <= 4
    assert queue_entries(tmp_path / "queue.yaml") == []
    assert slurm.squeue() == ""


def test_jobs_of_one_and_two_gpus_and_too_many(slurm, tmp_path, run_pegasus):
    command = 'echo "$CUDA_VISIBLE_DEVICES" > seen-{{job_id}}; echo "{{slots}}" > slots-{{job_id}}'
    setup(tmp_path, hosts(jobs=3), [{"command": command, "slots": "1"},
                                    {"command": command, "slots": "2"},
                                    {"command": "echo never", "slots": "5"}])
    done = run_pegasus(["q"], tmp_path, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    for job_id, count in (("1", 1), ("2", 2)):
        seen = read(tmp_path / f"seen-{job_id}").strip()
        assert read(tmp_path / f"slots-{job_id}").strip() == seen  # {{slots}}: Slurm's GPUs
        gpus = seen.split(",")
        assert len(set(gpus)) == count and set(gpus) <= {"0", "1", "2", "3"}, seen
    refused = [j for j in jobs_of(done.stdout) if j["command"] == "echo never"]
    assert refused and refused[0]["done"] == "exit 1", done.stdout
    assert "Requested node configuration is not available" in done.stdout  # Slurm's words
    assert "Traceback" not in done.stdout + done.stderr


def test_ctrl_c_then_second_ctrl_c_leaves_no_job_in_squeue(slurm, tmp_path):
    setup(tmp_path, hosts(jobs=2), ["sleep 600", "sleep 601", "echo never"])
    peg = Pegasus(tmp_path, ["q"])
    try:
        wait_for(lambda: len(slurm.squeue().splitlines()) == 2, what="two Slurm jobs")
        names = sorted(line.split()[1] for line in slurm.squeue().splitlines())
        assert names == ["1", "2"]  # --job-name: the job ids
        peg.ctrl_c()
        wait_for(peg.saw("Ctrl-c"), what="Pegasus to acknowledge the first Ctrl-c")
        assert len(slurm.squeue().splitlines()) == 2, "the first Ctrl-c stopped Slurm jobs"
        peg.ctrl_c()
        status = peg.wait(timeout=60)
        no_job_left(slurm)
    finally:
        peg.stop()
    assert status == 130, peg.said()
    assert queue_entries(tmp_path / "queue.yaml") == ["echo never"]


def test_kill_9_of_pegasus_leaves_no_slurm_job_and_next_start_says_interrupted(
        slurm, tmp_path, run_pegasus):
    setup(tmp_path, hosts(), ["touch started; sleep 600"])
    peg = Pegasus(tmp_path, ["q"])
    try:  # once the step runs (see docs/slurm.md, limits, for a kill as srun starts it)
        wait_for(lambda: (tmp_path / "started").exists(), what="the Slurm job to start")
        os.kill(peg.proc.pid, signal.SIGKILL)
        peg.proc.wait(timeout=30)
        no_job_left(slurm)
    finally:
        peg.stop()
    again = run_pegasus(["q"], tmp_path, timeout=60)
    assert "a previous Pegasus stopped while 1 job ran (on [slurm:pegtest/1])" in again.stdout \
        + again.stderr
    assert "touch started; sleep 600" in read(tmp_path / "interrupted.yaml")


def test_timeout_is_srun_time_and_pegasus_own_timeout_stops_the_step(slurm, tmp_path):
    setup(tmp_path, hosts(), [{"command": "sleep 600", "timeout": "3s"}])
    peg = Pegasus(tmp_path, ["q"])
    try:
        wait_for(lambda: slurm.squeue() != "", what="the Slurm job")
        limit = slurm.squeue_format("%l")
        status = peg.wait(timeout=60)
        no_job_left(slurm)
    finally:
        peg.stop()
    assert limit == "1:00", limit  # 3 s, in Slurm's whole minutes
    assert status == 1, peg.said()
    assert "timed out after 3s" in peg.out()


def test_a_bad_partition_stops_the_run_before_anything_is_taken(slurm, tmp_path, run_pegasus):
    setup(tmp_path, hosts(partition="nosuch"), ["echo never"])
    before = read(tmp_path / "queue.yaml")
    done = run_pegasus(["q"], tmp_path, timeout=60)
    said = done.stdout + done.stderr
    assert done.returncode == 3, said
    assert "host slurm:nosuch: Slurm says: Partition nosuch not found" in said
    assert "Traceback" not in said
    assert read(tmp_path / "queue.yaml") == before
    assert not (tmp_path / "consumed.yaml").exists()


def test_slurm_and_local_hosts_mix_and_two_gpu_jobs_go_to_slurm(slurm, tmp_path, run_pegasus):
    setup(tmp_path, hosts() + "- localhost\n",
          [{"command": "sleep 0.5; echo {{n}} > mark-{{n}}", "n": ["a", "b", "c", "d"]},
           {"command": "echo {{slots}} > gpus-{{n}}", "slots": "2", "n": ["e", "f"]}])
    done = run_pegasus(["q"], tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.glob("mark-*")) == ["mark-a", "mark-b", "mark-c",
                                                              "mark-d"]
    assert "[slurm:pegtest/1]" in done.stdout and "[localhost]" in done.stdout
    on = {j["command"]: j["label"] for j in jobs_of(done.stdout)}
    for n in ("e", "f"):  # localhost has one slot: only Slurm can give two GPUs
        assert on["echo ${CUDA_VISIBLE_DEVICES-} > gpus-" + n] == "[slurm:pegtest/1]"
        assert len(read(tmp_path / f"gpus-{n}").strip().split(",")) == 2


def test_a_step_that_outlived_a_killed_pegasus_is_cancelled_at_the_next_start(
        slurm, tmp_path, run_pegasus):
    """The one way a step outlives Pegasus (docs/slurm.md, limits): srun gone without
    cancelling it. Made here on purpose: srun stopped, then Pegasus and srun killed.
    The next start finds the step by its comment (this queue, this job id) and
    cancels it; a step of another queue with the same job id is left alone."""
    import subprocess
    other = subprocess.Popen(["srun", f"--partition={PARTITION}", "--job-name=1",
                              "--comment=pegasus:another-queue:1", "sleep", "600"],
                             start_new_session=True)
    try:
        wait_for(lambda: slurm.squeue() != "", what="another queue's job 1")
        setup(tmp_path, hosts(), ["touch started; sleep 600"])
        peg = Pegasus(tmp_path, ["q"])
        try:
            wait_for(lambda: (tmp_path / "started").exists(), what="the Slurm job to start")
            sruns = subprocess.run(["pgrep", "-P", str(peg.proc.pid), "srun"],
                                   capture_output=True, text=True).stdout.split()
            assert len(sruns) == 1, sruns
            os.kill(int(sruns[0]), signal.SIGSTOP)  # deaf to the SIGTERM of Pegasus's death
            os.kill(peg.proc.pid, signal.SIGKILL)
            peg.proc.wait(timeout=30)
            os.kill(int(sruns[0]), signal.SIGKILL)
        finally:
            peg.stop()
        assert len(slurm.squeue().splitlines()) == 2  # the leftover, and the other queue's
        again = run_pegasus(["q"], tmp_path, timeout=60)
        said = again.stdout + again.stderr
        assert "job #1 outlived the Pegasus that started it" in said, said
        wait_for(lambda: len(slurm.squeue().splitlines()) == 1, timeout=30,
                 what="the leftover to be cancelled")
        assert "another-queue" in slurm.squeue_format("%k")  # the other queue's job 1 runs on
    finally:
        other.send_signal(signal.SIGTERM)
        other.wait(timeout=30)
    no_job_left(slurm)
