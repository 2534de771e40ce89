"""``--dry-run`` (issue 12): both files read and checked, each job printed as it
would run and where, then the totals; nothing connected to, run or changed."""

import os
import shutil
import subprocess
import sys

from helpers import run_in_process

# Host names no resolver knows: a dry run that tried to connect would fail.
HOSTS = "- hostname: node-a.invalid\n  gpu: [0, 1]\n- node-b.invalid\n"
QUEUE = ("# my experiments\n"
         "- touch ran-1; echo on {{hostname}}\n"
         "- command: touch ran-{{x}} && echo 'x={{x}}' & wait\n"
         "  x: [2, 3, 4]\n"
         "- |\n  touch ran-5\n  echo two lines\n")


def _folder(tmp_path, hosts=HOSTS, queue=QUEUE, records=True):
    (tmp_path / "hosts.yaml").write_text(hosts)
    (tmp_path / "queue.yaml").write_text(queue)
    if records:  # files of earlier runs, which a dry run must leave as they are
        (tmp_path / "consumed.yaml").write_text("- echo earlier  # done\n")
        (tmp_path / "interrupted.yaml").write_text("- echo lost\n")
    return tmp_path


def _state(folder):
    """Every file of the folder (hidden ones too) with its bytes and mode."""
    return {name: ((folder / name).read_bytes(), os.stat(folder / name).st_mode)
            for name in sorted(os.listdir(folder))}


def _dry(folder, *args):
    before = _state(folder)
    done = run_in_process(list(args) + ["--dry-run"], folder)
    assert _state(folder) == before, done.stdout + done.stderr  # nothing created or changed
    assert not any(name.startswith("ran-") for name in os.listdir(folder))  # nothing ran
    return done


def test_queue_mode_prints_each_job_rendered_on_its_sub_node_and_changes_nothing(tmp_path):
    done = _dry(_folder(tmp_path), "q")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        # the scheduler's order on an idle run: spread over hosts, in hosts.yaml order
        "[node-a.invalid (gpu=0)] touch ran-1; echo on node-a.invalid",
        "[node-b.invalid] touch ran-2 && echo 'x=2' & wait",
        "[node-a.invalid (gpu=1)] touch ran-3 && echo 'x=3' & wait",
        # every sub-node was given a job: the next wave, as if those had finished
        "[node-a.invalid (gpu=0)] touch ran-4 && echo 'x=4' & wait",
        "[node-b.invalid] touch ran-5",
        "[node-b.invalid] > echo two lines",
        "pegasus: dry run: 5 jobs from 3 entries of queue.yaml, 3 sub-nodes; placed in "
        "2 waves as if every sub-node were free; nothing was run, connected to or changed"]
    assert done.stderr == ""


def test_broadcast_prints_each_job_on_every_sub_node(tmp_path):
    done = _dry(_folder(tmp_path), "b", "-n", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[node-a.invalid (gpu=0)] touch ran-1; echo on node-a.invalid",
        "[node-a.invalid (gpu=1)] touch ran-1; echo on node-a.invalid",
        "[node-b.invalid] touch ran-1; echo on node-b.invalid",
        "[node-a.invalid (gpu=0)] touch ran-2 && echo 'x=2' & wait",
        "[node-a.invalid (gpu=1)] touch ran-2 && echo 'x=2' & wait",
        "[node-b.invalid] touch ran-2 && echo 'x=2' & wait",
        "pegasus: dry run: 5 jobs from 3 entries of queue.yaml, 3 sub-nodes: 15 commands "
        "in all (each job on every sub-node); 2 printed (-n 2), 3 not; nothing was run, "
        "connected to or changed"]


def test_n_limits_the_jobs_printed_not_the_totals(tmp_path):
    done = _dry(_folder(tmp_path), "q", "-n", "1")
    lines = done.stdout.splitlines()
    assert lines[0] == "[node-a.invalid (gpu=0)] touch ran-1; echo on node-a.invalid"
    assert lines[1].startswith("pegasus: dry run: 5 jobs from 3 entries")
    assert "1 printed (-n 1), 4 not" in lines[1] and len(lines) == 2
    assert _dry(tmp_path, "q", "-n", "0").stdout.startswith("pegasus: dry run: 5 jobs")


def test_n_does_not_change_the_waves_said(tmp_path):
    """The waves are those of every job, printed or not (-n 1 said 1 wave)."""
    _folder(tmp_path, hosts="- hostname: localhost\n  slot: [1, 2]\n",
            queue="".join(f"- echo {i}\n" for i in range(5)))
    every = _dry(tmp_path, "q").stdout.splitlines()[-1]
    assert "placed in 3 waves" in every, every
    for n in ("0", "1", "2", "5"):
        said = _dry(tmp_path, "q", "-n", n).stdout.splitlines()[-1]
        assert "placed in 3 waves" in said, said


def test_slots_show_the_slots_each_job_would_get_in_the_schedulers_plan(tmp_path):
    hosts = "- hostname: gpu-1.invalid\n  slots: 4\n- hostname: gpu-2.invalid\n  slots: 2\n"
    queue = "- command: train --gpus {{slots}}\n  slots: [2, 2, 1, 4, 2]\n"
    done = _dry(_folder(tmp_path, hosts, queue, records=False), "q")
    assert done.stdout.splitlines()[:5] == [
        "[gpu-1.invalid slots 0,1] train --gpus 0,1",  # packed: the first host that fits
        "[gpu-1.invalid slots 2,3] train --gpus 2,3",
        "[gpu-2.invalid slots 0] train --gpus 0",
        "[gpu-1.invalid slots 0,1,2,3] train --gpus 0,1,2,3",  # the next wave
        "[gpu-2.invalid slots 0,1] train --gpus 0,1"]


def test_job_id_renders_the_ids_a_run_started_now_would_give(tmp_path):
    queue = "- echo a {{job_id}}\n- command: echo b{{x}} {{job_id}}\n  x: [1, 2]\n"
    folder = _folder(tmp_path, "- node-a.invalid\n", queue, records=False)
    assert _dry(folder, "q").stdout.splitlines()[:3] == [
        "[node-a.invalid] echo a 1", "[node-a.invalid] echo b1 2", "[node-a.invalid] echo b2 3"]
    (folder / ".queue.yaml.job-id").write_text("41\n")  # earlier runs used 1-40
    assert _dry(folder, "b", "-n", "2").stdout.splitlines()[:2] == [
        "[node-a.invalid] echo a 41", "[node-a.invalid] echo b1 42"]


def test_no_queue_file_is_an_empty_queue_and_creates_nothing(tmp_path):
    (tmp_path / "hosts.yaml").write_text(HOSTS)
    done = _dry(tmp_path, "q")
    assert done.returncode == 0
    assert "queue.yaml does not exist: an empty queue" in done.stdout
    assert "dry run: 0 jobs from 0 entries" in done.stdout


def _real_and_dry(tmp_path, hosts, queue, *args):
    """A real run and a dry run of the same bad files, each in its own folder."""
    real, dry = tmp_path / "real", tmp_path / "dry"
    for folder in (real, dry):
        folder.mkdir(parents=True)
        _folder(folder, hosts, queue)
    ran = run_in_process(["q", *args], real)
    return ran, _dry(dry, "q", *args)


def test_bad_input_says_what_a_real_run_says_with_its_exit_status(tmp_path):
    cases = [(HOSTS, QUEUE + "- echo {{ nope }}\n"),  # unknown name, entry 4
             (HOSTS, "- command: a\n  slots: 9\n"),  # more slots than any host
             ("- node-1\n  bad: indent\n", QUEUE),  # hosts.yaml does not parse
             ("[]\n", QUEUE)]  # no hosts
    for number, (hosts, queue) in enumerate(cases):
        ran, dry = _real_and_dry(tmp_path / str(number), hosts, queue)
        assert ran.returncode == dry.returncode == 2, (ran.stderr, dry.stderr)
        assert dry.stderr == ran.stderr and dry.stderr.startswith("pegasus: ")
        assert dry.stdout == ran.stdout == ""


def test_a_daemons_dry_run_shows_the_entries_before_a_bad_one(tmp_path):
    dry = _dry(_folder(tmp_path, HOSTS, "- echo first\n- echo {{ nope }}\n- echo 3\n"),
               "q", "-d")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert "unknown name 'nope'" in lines[0] and "daemon mode" in lines[1]
    assert lines[2:] == ["[node-a.invalid (gpu=0)] echo first",
                         "pegasus: dry run: 1 job from 1 entry of queue.yaml, 3 sub-nodes; "
                         "placed in 1 wave as if every sub-node were free; nothing was run, "
                         "connected to or changed"]


def test_a_dry_run_takes_no_lock_and_leaves_a_lock_file_away(tmp_path):
    """Lock mode may hold the lock: a dry run reads the file as it is, and waits
    for nothing (atomic rewrites: it sees the old file or the new one)."""
    import fcntl
    folder = _folder(tmp_path)
    lock = folder / ".queue.yaml.lock"
    lock.write_text("")
    with open(lock) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        done = _dry(folder, "q")
    assert done.returncode == 0 and "dry run: 5 jobs" in done.stdout


def test_dry_run_options_are_usage_errors_elsewhere(tmp_path):
    shutil.copy(_folder(tmp_path) / "queue.yaml", tmp_path / "copy.yaml")
    for args, words in ((["q", "-n", "3"], "give --dry-run too"),
                        (["l", "--dry-run"], "--dry-run is for queue and broadcast"),
                        (["q", "--dry-run", "-n", "x"], "-n must be a whole number")):
        done = run_in_process(args, tmp_path)
        assert done.returncode == 2 and words in done.stderr, (args, done.stderr)


def test_a_dry_run_whose_output_cannot_be_written_says_so_and_exits_74(tmp_path):
    folder = _folder(tmp_path)
    before = _state(folder)
    with open("/dev/full", "wb") as full:
        res = subprocess.run([sys.executable, "-m", "pegasus", "q", "--dry-run"], cwd=folder,
                             stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert res.returncode == 74, res.stderr
    assert "pegasus: cannot write to standard output (No space left on device)" in res.stderr
    assert _state(folder) == before
