"""Smoke run of benchmarks/compare.py --quick: every run passes its check and
the table is printed. No timing is asserted.

The benchmark starts its own sshd cluster, so this test needs what the
``cluster`` fixture needs (root, /usr/sbin/sshd) and is skipped otherwise --
except under CI=true, where that is a failure.
"""
import os
import re

import pytest

from helpers import ROOT, run_script

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

BENCH = os.path.join(ROOT, "benchmarks", "compare.py")

ROWS = [
    "broadcast `echo` to 8 hosts",
    "40 short jobs over 8 sub-nodes",
    "64 x `sleep 0.05` on 32 sub-nodes",
    "4 x 1 MiB of 64-byte lines, to a file",
]


def test_compare_quick(can_run_cluster):
    res = run_script(BENCH, "--quick", "--rounds", "1")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lines = res.stdout.splitlines()
    head = [line for line in lines if line.startswith("workload")]
    assert head and all(r in head[0] for r in ("pegasus", "naive", "cm", "plain", "goal"))
    for row in ROWS:
        found = [line for line in lines if line.startswith(row + " ")]
        assert found, "row %r missing from:\n%s" % (row, res.stdout)
        assert " x " in found[0] and ("met" in found[0]), found[0]
    assert any(line.startswith("pegasus peak RSS, output:") for line in lines), res.stdout


def test_compare_only_one_workload(can_run_cluster):
    res = run_script(BENCH, "--quick", "--rounds", "1", "--only", "output,pegasus,plain")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    table = [line for line in res.stdout.splitlines() if " x " in line and "goal" not in line]
    assert [line.split(" ")[0:2] for line in table] == [["4", "x"]], res.stdout


def test_compare_refuses_an_unknown_name():
    res = run_script(BENCH, "--only", "outptu", timeout=60)
    assert res.returncode != 0
    assert "unknown outptu" in res.stderr


def test_compare_long_lived_shell_runner(can_run_cluster):
    """``shell`` (naive_pssh.py --shell) runs only when asked for, and passes the
    same check: every job's line exactly once."""
    res = run_script(BENCH, "--quick", "--rounds", "1", "--only", "short,naive,shell")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    head = [line for line in res.stdout.splitlines() if line.startswith("workload")]
    assert head and head[0].split()[1:3] == ["naive", "shell"], res.stdout
    row = [line for line in res.stdout.splitlines() if line.startswith(ROWS[1] + " ")]
    cells = re.findall(r"\d+\.\d\d \(\d+\.\d/\d+\.\d\)", row[0]) if row else []
    assert len(cells) == 2, res.stdout  # wall (runner CPU/node CPU) of each runner
