"""Every folder of examples/ runs on localhost sub-nodes and does its jobs.

Each example is copied to tmp_path first (running consumes queue.yaml) and run,
the quick start with the real CLI (``run_pegasus``: README's first command),
the others through ``cli.main`` in this process (``run_in_process``); then the
checks below look at the exit status, what is left in queue.yaml, what went to
consumed.yaml and what the jobs printed or wrote. A new example folder without
an entry in CHECKS fails the test.
"""
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example_folders():
    """Names of the example folders (every folder with a hosts.yaml)."""
    return sorted(p.name for p in EXAMPLES.iterdir() if (p / "hosts.yaml").is_file())


def entries(path):
    """The entries of a YAML list file (an empty or comment-only file has none)."""
    return yaml.safe_load(path.read_text()) or []


def job_lines(stdout, text):
    """Job output lines (after the sub-node prefix) that contain ``text``."""
    return [line for line in stdout.splitlines() if "] " + text in line and "=== run" not in line]


def run_prefixes(stdout):
    """The sub-node prefix of every job start frame, e.g. ``[localhost (slot=0)]``."""
    return [line.split("] === run", 1)[0] + "]" for line in stdout.splitlines()
            if "] === run " in line]


# ---------------------------------------------------------------- checks

def check_quickstart(folder, out):
    assert len(entries(folder / "consumed.yaml")) == 4
    for bs in (8, 16, 32, 64):
        assert job_lines(out, "done bs=%d" % bs)


def check_queue_simple(folder, out):
    assert len(entries(folder / "consumed.yaml")) == 4
    for bs in (8, 16, 32, 64):
        assert len(job_lines(out, "training bs=%d" % bs)) == 1
    assert set(run_prefixes(out)) == {"[localhost]", "[127.0.0.1]"}


def check_parametrized_hosts(folder, out):
    assert len(entries(folder / "consumed.yaml")) == 4
    prefixes = run_prefixes(out)
    assert len(prefixes) == 4 and len(set(prefixes)) == 4, prefixes  # one job per sub-node
    for prefix in prefixes:
        container = prefix.split("container=")[1].rstrip(")]")
        assert any(line.startswith(prefix) for line in job_lines(out, "training container=" + container))


def check_parametrized_commands(folder, out):
    assert len(entries(folder / "consumed.yaml")) == 4
    for bs in (8, 16, 32, 64):
        lines = [line for line in job_lines(out, "training container=gpu") if line.endswith(" bs=%d" % bs)]
        assert len(lines) == 1, (bs, lines)


def check_quiz(folder, out):
    assert len(entries(folder / "consumed.yaml")) == 1 + 2 * 2 * 2
    assert len(job_lines(out, "hi from ")) == 1
    assert len(job_lines(out, "bye from ")) == 4
    assert len(run_prefixes(out)) == 9


def check_gpu_sweep(folder, out):
    assert len(entries(folder / "consumed.yaml")) == 4
    names = sorted(os.listdir(folder / "results"))
    assert names == sorted("%s_lr%s.txt" % (model, lr)
                           for model in ("facebook--opt-125m", "EleutherAI--pythia-160m")
                           for lr in ("1e-3", "3e-4"))
    assert sorted(job_lines(out, "training model=")) and "on GPU 0" in out and "on GPU 1" in out


def check_gpu_slots(folder, out):
    assert len(entries(folder / "consumed.yaml")) == 4
    prefixes = run_prefixes(out)
    assert prefixes == ["[localhost slots 0]", "[localhost slots 2,3]",
                        "[localhost slots 0,1,2,3]", "[localhost slots 0,1,2,3]"], prefixes
    assert len(job_lines(out, "training model=llama-7b gpus=0 on GPU 0")) == 1
    assert len(job_lines(out, "training model=llama-7b gpus=2,3 on GPU 2,3")) == 1
    assert len(job_lines(out, "training model=mistral-7b policy=buddy on GPU 0,1,2,3")) == 1


def check_broadcast_terraforming(folder, out):
    for node in ("node-a", "node-b"):
        profile = folder / node / ".profile"
        assert profile.is_symlink() and "EDITOR=vim" in profile.read_text()
        assert len(job_lines(out, "dotfiles installed in %s" % (folder / node))) == 1
    assert len(entries(folder / "consumed.yaml")) == 3  # one entry per broadcast step


def check_broadcast_fold(folder, out):
    assert out.splitlines()[:2] == ["=== localhost#[1-4],127.0.0.1#[1-2] (6): exit 0 ===",
                                    "kernel %s" % os.uname().sysname]
    assert "=== localhost#[1-4] (4): exit 0 ===\nnginx: active\n" \
        "=== 127.0.0.1#[1-2] (2): exit 0 ===\npostgresql: active\n" in out
    assert "=== run" not in out
    assert len(entries(folder / "consumed.yaml")) == 2


# folder -> (pegasus arguments, check)
CHECKS = {
    "quickstart": (["q"], check_quickstart),
    "queue-simple": (["q"], check_queue_simple),
    "parametrized-hosts": (["q"], check_parametrized_hosts),
    "parametrized-commands": (["q"], check_parametrized_commands),
    "quiz": (["q"], check_quiz),
    "gpu-sweep": (["q"], check_gpu_sweep),
    "gpu-slots": (["q"], check_gpu_slots),
    "broadcast-terraforming": (["b", "-e"], check_broadcast_terraforming),
    "broadcast-fold": (["b", "--fold"], check_broadcast_fold),
}

END_TO_END = {"quickstart"}  # run as the real command; the others in this process

# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("name", sorted(set(example_folders()) | set(CHECKS)))
def test_example_runs(name, tmp_path, request):
    """The example runs in a scratch copy, exits 0, empties its queue, did its jobs."""
    assert name in CHECKS, "examples/%s has no check in tests/test_examples.py" % name
    assert (EXAMPLES / name / "hosts.yaml").is_file(), "examples/%s is gone" % name
    folder = tmp_path / name
    shutil.copytree(EXAMPLES / name, folder)
    args, check = CHECKS[name]
    # `python3` in the examples is the interpreter running the tests.
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    run = request.getfixturevalue("run_pegasus" if name in END_TO_END else "run_in_process")
    res = run(args, cwd=folder, env={"PATH": path, "NO_COLOR": "1"}, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert entries(folder / "queue.yaml") == []
    check(folder, res.stdout)


@pytest.mark.parametrize("name", example_folders())
def test_example_has_readme(name):
    """Each example says what it shows and how to run it (in a copy)."""
    text = (EXAMPLES / name / "README.md").read_text()
    assert "pegasus " in text and "cp " in text


def test_train_stand_ins_are_identical():
    """The examples' train.py copies do not drift apart."""
    copies = {p.read_text() for p in EXAMPLES.glob("*/train.py")}
    assert len(copies) == 1
