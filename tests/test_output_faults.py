"""Pegasus's own output cannot be written: never a job's failure (issue 10, item 1).

A closed pipe (``| head -n 1``), a full disk (``> /dev/full``) or no stdout
at all (``>&-``) stops Pegasus from taking entries, as a first Ctrl-c does:
the entries it did not take stay in the queue, nothing goes to
interrupted.yaml, running jobs run to their end, the summary goes to stderr,
there is no traceback, and the exit status is 74. All on ``localhost``.
"""

import contextlib
import os
import subprocess
import sys

import pytest
import yaml

from helpers import queue_entries, read, setup

N = 40


def start(folder, stdout, extra_shell=""):
    """``pegasus q`` with the given stdout; stderr captured."""
    cmd = f"{sys.executable} -m pegasus q {extra_shell}"
    return subprocess.Popen(["sh", "-c", cmd], cwd=str(folder), stdin=subprocess.DEVNULL,
                            stdout=stdout, stderr=subprocess.PIPE)


def entries_taken(folder):
    return yaml.safe_load(read(folder / "consumed.yaml")) or []


def check_nothing_lost(folder, err):
    assert "Traceback" not in err, err
    assert not (folder / "interrupted.yaml").exists() or not read(folder / "interrupted.yaml").strip()
    left = queue_entries(folder / "queue.yaml")
    taken = entries_taken(folder)
    assert len(left) + len(taken) == N  # every entry is in exactly one place
    assert left == [f"echo job {i}" for i in range(N - len(left) + 1, N + 1)]


def test_a_reader_that_goes_away_stops_taking_and_loses_nothing(tmp_path):
    setup(tmp_path, "- localhost\n", [f"echo job {i}" for i in range(1, N + 1)])
    proc = start(tmp_path, subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # `| head -n 1`
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert first.startswith(b"[localhost] === run #1 'echo job 1' ===")
    assert proc.returncode == 74, err
    assert "cannot write to standard output (Broken pipe)" in err
    assert "all succeeded" in err  # the summary, on stderr
    check_nothing_lost(tmp_path, err)
    assert len(queue_entries(tmp_path / "queue.yaml")) > 0


def test_a_full_disk_as_stdout_stops_taking_and_loses_nothing(tmp_path):
    setup(tmp_path, "- localhost\n", [f"echo job {i}" for i in range(1, N + 1)])
    with open("/dev/full", "wb") as full:
        proc = start(tmp_path, full)
        _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 74, err
    assert "No space left on device" in err
    check_nothing_lost(tmp_path, err)
    assert len(queue_entries(tmp_path / "queue.yaml")) > 0


def test_no_stdout_at_all_takes_nothing(tmp_path):
    setup(tmp_path, "- localhost\n", [f"echo job {i}" for i in range(1, N + 1)])
    proc = start(tmp_path, subprocess.DEVNULL, ">&-")
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 74, err
    assert "standard output is closed" in err
    check_nothing_lost(tmp_path, err)
    assert entries_taken(tmp_path) == []


def test_help_and_version_to_a_reader_that_goes_away(tmp_path):
    for flag in ("--help", "--version"):
        res = subprocess.run(["sh", "-c", f"{sys.executable} -m pegasus {flag} | head -c 1"],
                             capture_output=True, text=True, timeout=30)
        assert "Traceback" not in res.stderr and "Exception" not in res.stderr, res.stderr


@pytest.mark.parametrize("flag", ["--help", "--version"])
@pytest.mark.parametrize("redirect, said", [
    (">&-", "pegasus: standard output is closed"),
    ("> /dev/full", "pegasus: cannot write to standard output (No space left on device)"),
], ids=["closed", "full"])
def test_help_and_version_that_cannot_be_written_exit_74(flag, redirect, said):
    """As for a run's output: exit 74 and a word on stderr, never a silent 0."""
    res = subprocess.run(["sh", "-c", f"{sys.executable} -m pegasus {flag} {redirect}"],
                         capture_output=True, text=True, timeout=30)
    assert (res.returncode, res.stderr) == (74, said + "\n")


def test_help_with_stdout_and_stderr_closed_still_exits_74():
    res = subprocess.run(["sh", "-c", f"{sys.executable} -m pegasus --help >&- 2>&-; echo $?"],
                         capture_output=True, text=True, timeout=30)
    assert res.stdout == "74\n"


def test_a_job_whose_output_floods_a_stalled_reader_is_not_cut_short(tmp_path):
    """A reader that stops reading makes job readers wait, not fail (back-pressure)."""
    setup(tmp_path, "- localhost\n", ["head -c 3000000 /dev/zero | tr '\\0' x | fold -w 100",
                                      "echo after"])
    r, w = os.pipe()
    proc = start(tmp_path, w)
    os.close(w)
    with os.fdopen(r, "rb") as reader:  # reads only once Pegasus has queued a lot
        out = reader.read()
    proc.wait(timeout=120)
    assert proc.returncode == 0, proc.stderr.read().decode()
    lines = out.decode().splitlines()
    assert sum(1 for line in lines if line == "[localhost] " + "x" * 100) == 30000
    assert "[localhost] after" in lines


# ---------------------------------------------------------------- a full disk (item 6)

@contextlib.contextmanager
def small_disk(tmp_path, size="256k"):
    """A tmpfs of ``size`` mounted at tmp_path/disk (root only), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: " + mounted.stderr)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk, pages_left):
    """Fill the disk, then give back ``pages_left`` pages of 4 KiB."""
    filler = disk / "filler"
    with open(str(filler), "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(str(filler), max(0, os.path.getsize(str(filler)) - pages_left * 4096))


@pytest.mark.sshd  # root: mounts a tmpfs
def test_a_full_disk_stops_taking_and_loses_nothing(tmp_path):
    """The queue's own disk fills up mid-run (a job fills it): Pegasus says so, takes
    nothing more, lets running jobs finish, exits 74; nothing is lost or run twice
    and no temporary file is left behind."""
    with small_disk(tmp_path) as disk:
        n = 30
        setup(disk, "- hostname: localhost\n  slot: [1, 2]\n",
              ["head -c 400000 /dev/zero > fill 2>/dev/null; echo filled"] +
              ["echo job %d" % i for i in range(2, n + 1)])
        res = subprocess.run([sys.executable, "-m", "pegasus", "q"], cwd=str(disk),
                             capture_output=True, text=True, timeout=60)
        said = res.stdout + res.stderr
        assert res.returncode == 74, said
        assert "no space left" in said and "Traceback" not in said
        left = queue_entries(disk / "queue.yaml")
        ran = [line for line in res.stdout.splitlines() if line.endswith("=== done (exit 0) ===")]
        assert len(left) + len(ran) == n, said  # every entry ran once or is still queued
        assert left == ["echo job %d" % i for i in range(n - len(left) + 1, n + 1)]
        assert not [p for p in os.listdir(str(disk)) if ".partial" in p]


@pytest.mark.sshd  # root: mounts a tmpfs
@pytest.mark.parametrize("pages_left", [0, 1], ids=["no-room", "room-for-the-new-queue"])
def test_a_disk_full_at_the_first_take_leaves_no_file_behind(tmp_path, pages_left):
    """No room at all, or room for the rewritten queue but not for the journal's
    record: nothing is taken, and neither a temporary queue file nor an empty
    journal is left beside the queue."""
    with small_disk(tmp_path) as disk:
        setup(disk, "- localhost\n", ["echo a", "echo b"])
        fill(disk, pages_left)
        res = subprocess.run([sys.executable, "-m", "pegasus", "q"], cwd=str(disk),
                             capture_output=True, text=True, timeout=60)
        said = res.stdout + res.stderr
        assert res.returncode == 74, said
        assert "no space left" in said and "Traceback" not in said and "=== run" not in said
        assert queue_entries(disk / "queue.yaml") == ["echo a", "echo b"]
        # No temporary file; the id counter and the (empty) logs folder are no leftovers.
        assert sorted(os.listdir(str(disk))) == [".queue.yaml.job-id", ".queue.yaml.lock",
                                                 "filler", "hosts.yaml", "logs", "queue.yaml"]
        assert os.listdir(str(disk / "logs")) == []
