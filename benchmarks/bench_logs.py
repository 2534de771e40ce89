"""What job logs cost a job: bench_queue's (a) with logs on and with --no-logs,
interleaved in one cluster, and optionally another tree's code alternated too.

For each round and each variant: 1 x 'true' and N x 'true' on one sub-node,
``-p 0``; per-job overhead = (wall(N) - wall(1)) / (N - 1), and the same for
Pegasus's own CPU. The order of the variants turns round every round, so
that a machine growing busier favours none. Prints each variant's medians
and the ratio of logs on to ``--no-logs``.

Run (as root, Pegasus installed in the venv):
  .venv/bin/python benchmarks/bench_logs.py [--jobs 1000] [--rounds 3]
                                           [--other-tree /work/main]
``--other-tree``: also run that checkout's ``pegasus`` package (through
PYTHONPATH, same venv), logs on and off. PEGASUS_TEST_FIRST_IP picks the
cluster's addresses (127.0.0.<n>...), as for the tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from bench_queue import Bench, hosts_list, loadavg, med  # noqa: E402
from cluster import Cluster  # noqa: E402


def variants(other: Optional[str]) -> List[Tuple[str, Optional[str], List[str]]]:
    """(name, PYTHONPATH or None, extra pegasus options)."""
    found = [("this tree, logs on", None, []), ("this tree, --no-logs", None, ["--no-logs"])]
    if other:
        found += [(f"{other}, logs on", other, []),
                  (f"{other}, --no-logs", other, ["--no-logs"])]
    return found


def one_round(bench: Bench, hosts: str, jobs: int, name_path_extra) -> Tuple[float, float]:
    """(wall ms, cpu ms) per job of one variant, once."""
    _, path, extra = name_path_extra
    if path:
        os.environ["PYTHONPATH"] = path
    else:
        os.environ.pop("PYTHONPATH", None)
    bench.extra = extra
    one = bench.run(hosts, ["true"], 1, 0)
    many = bench.run(hosts, ["true"] * jobs, jobs, 0)
    return ((many.wall - one.wall) / (jobs - 1) * 1000,
            (many.cpu - one.cpu) / (jobs - 1) * 1000)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--other-tree", default=None)
    args = ap.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="pegasus-bench-logs-")
    os.chmod(workdir, 0o755)  # sshd reads authorized_keys as the test user
    cluster = Cluster(os.path.join(workdir, "cluster"), n_hosts=1,
                      first_ip=int(os.environ.get("PEGASUS_TEST_FIRST_IP", "11")))
    all_variants = variants(args.other_tree)
    got: Dict[str, List[Tuple[float, float]]] = {v[0]: [] for v in all_variants}
    try:
        cluster.start()
        bench = Bench(cluster, os.path.join(workdir, "runs"), False)
        hosts = hosts_list(cluster.aliases[:1])
        print(f"bench_logs: {args.jobs} x 'true' on 1 sub-node, {args.rounds} rounds; "
              f"load {loadavg()}", flush=True)
        for r in range(args.rounds):
            order = all_variants if r % 2 == 0 else list(reversed(all_variants))
            for variant in order:
                wall, cpu = one_round(bench, hosts, args.jobs, variant)
                got[variant[0]].append((wall, cpu))
                print(f"  round {r + 1}: {variant[0]:<32} {wall:6.2f} ms wall, "
                      f"{cpu:5.2f} ms cpu a job (load {loadavg()})", flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print("medians:")
    for name, runs in got.items():
        print(f"  {name:<32} {med([w for w, _ in runs]):6.2f} ms wall, "
              f"{med([c for _, c in runs]):5.2f} ms cpu a job")
    for on, off in zip(all_variants[::2], all_variants[1::2]):
        w_on, w_off = (med([w for w, _ in got[v[0]]]) for v in (on, off))
        c_on, c_off = (med([c for _, c in got[v[0]]]) for v in (on, off))
        print(f"  {on[0]} / --no-logs: wall {w_on / w_off:.3f}, cpu {c_on / c_off:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
