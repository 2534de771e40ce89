"""Smoke run of benchmarks/bench_queue.py --quick: it runs and prints its table.

No timing is asserted. The benchmark starts its own sshd cluster, so this test
needs the same things as the ``cluster`` fixture (root, /usr/sbin/sshd) and is
skipped otherwise -- except under CI=true, where that is a failure.
"""
import os

import pytest

from helpers import ROOT, run_script

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

BENCH = os.path.join(ROOT, "benchmarks", "bench_queue.py")

ROWS = [
    "a. overhead/job, 1 sub-node, 100 jobs",
    "a. pegasus cpu/job, 1 sub-node",
    "b. rate, 100 jobs, 8 sub-nodes",
    "b. rate, 1k jobs, 8 sub-nodes",
    "b. rate, 10k jobs, 8 sub-nodes",
    "b. pegasus cpu/job, 10k jobs",
    "b. rate 10k / rate 100",
    "c. wall, 4 x 5 MB, lines",
    "c. peak RSS, 4 x 5 MB, lines",
    "c. wall, 4 x 5 MB, no newline",
    "c. peak RSS, 4 x 5 MB, no newline",
    "c. wall no-newline / wall lines",
]


def test_bench_queue_quick(can_run_cluster):
    res = run_script(BENCH, "--quick", "--repeats", "1")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert any(line.startswith("measurement") and "target" in line and "measured" in line
               and "pass" in line for line in lines), res.stdout
    for row in ROWS:
        found = [line for line in lines if line.startswith(row + " ")]
        assert found, "row %r missing from:\n%s" % (row, res.stdout)
        assert found[0].split()[-1] in ("PASS", "FAIL", "-"), found[0]
