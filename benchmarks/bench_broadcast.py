"""Broadcast fan-out: wall time of `pegasus b` running `true` on N sub-nodes.

Starts its own loopback cluster of real sshd's (tests/cluster.py), one host
per sub-node, and times the whole command (start-up, ssh -G, every
connection, the step, the summary), median of --repeat runs.

    python benchmarks/bench_broadcast.py [--sizes 8,32,64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from cluster import Cluster  # noqa: E402


def run_once(cluster: Cluster, n: int, folder: str) -> float:
    with open(os.path.join(folder, "hosts.yaml"), "w") as f:
        f.writelines(f"- {alias}\n" for alias in cluster.aliases[:n])
    with open(os.path.join(folder, "queue.yaml"), "w") as f:
        f.write("- 'true'\n")
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pegasus", "b", "-p", "0",
                          "--ssh-config", cluster.ssh_config], cwd=folder,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    if res.returncode != 0 or f"all {n} sub-nodes succeeded" not in res.stdout:
        raise SystemExit(f"broadcast to {n} failed:\n{res.stdout[-2000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8,32,64")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="pegasus-bb-", dir="/tmp") as work:
        os.chmod(work, 0o755)
        with Cluster(os.path.join(work, "cluster"), n_hosts=max(sizes)) as cluster:
            cluster.seed_known_hosts()
            print(f"{'sub-nodes':>10} {'median wall (s)':>16} {'runs':>24}")
            for n in sizes:
                folder = os.path.join(work, f"run-{n}")
                os.makedirs(folder)
                walls = [run_once(cluster, n, folder) for _ in range(args.repeat)]
                runs = " ".join(f"{w:.2f}" for w in walls)
                print(f"{n:>10} {statistics.median(walls):>16.2f} {runs:>24}")


if __name__ == "__main__":
    main()
