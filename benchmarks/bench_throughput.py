"""Issue 16's SSH workloads for Pegasus alone, interleaved between code trees.

Until benchmarks/compare.py (Pegasus beside a naive parallel-ssh script and
ssh with ControlMaster) this times, on one loopback cluster of real sshd's
(tests/cluster.py), the wall and the CPU seconds (user + system, from
wait4) of ``pegasus`` run from each ``--trees`` folder (through PYTHONPATH),
round by round, the order of the trees reversed every other round:

  short   200 ``echo N`` jobs over 8 hosts (one sub-node each)
  sleep   400 ``sleep 0.05`` jobs on 8 hosts x 4 slots (32 sub-nodes)
  bcast   broadcast ``true`` to 64 hosts
  b128    broadcast ``true`` to 128 hosts (--hosts 128)
  one128  broadcast ``true`` to 128 sub-nodes of one host (sshd's MaxStartups)

Every run is checked (exit 0 and Pegasus's summary line). Pegasus runs with
its byte code compiled beforehand (in a cache of its own, out of the trees),
as an installed Pegasus has it, even where PYTHONDONTWRITEBYTECODE is set:
without it every run compiles some 70 modules.

    python benchmarks/bench_throughput.py [--trees /work/main,.] [--rounds 3]
        [--only short,sleep,bcast] [--hosts 64]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from cluster import Cluster  # noqa: E402


def workloads(aliases):
    one_each = "".join("- %s\n" % a for a in aliases[:8])
    return {
        "short": ("q", one_each, "".join("- echo %d\n" % i for i in range(200)),
                  "200 jobs, all succeeded"),
        "sleep": ("q", "- hostname: [%s]\n  slot: ['1', '2', '3', '4']\n" % ", ".join(aliases[:8]),
                  "- sleep 0.05\n" * 400, "400 jobs, all succeeded"),
        "bcast": ("b", "".join("- %s\n" % a for a in aliases[:64]), "- 'true'\n",
                  "all 64 sub-nodes succeeded"),
        "b128": ("b", "".join("- %s\n" % a for a in aliases[:128]), "- 'true'\n",
                 "all 128 sub-nodes succeeded"),
        "one128": ("b", "- hostname: %s\n  i: [%s]\n" % (aliases[0], ", ".join(map(str, range(128)))),
                   "- 'true'\n", "all 128 sub-nodes succeeded"),
    }


def run(tree, folder, work, ssh_config):
    mode, hosts, queue, expect = work
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for name, text in (("hosts.yaml", hosts), ("queue.yaml", queue)):
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    env = python_env(tree)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pegasus", mode, "-p", "0",
                             "--ssh-config", ssh_config], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode(errors="replace")
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0 or expect not in out:
        raise SystemExit("bench_throughput: %s in %s failed:\n%s" % (mode, tree, out[-3000:]))
    return wall, usage.ru_utime + usage.ru_stime


PYCACHE = os.path.join(tempfile.gettempdir(), "pegasus-tp-pycache")


def python_env(tree):
    """Pegasus from ``tree``, with byte code as a user has it (even where
    PYTHONDONTWRITEBYTECODE is set), kept out of the trees."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), PYTHONPYCACHEPREFIX=PYCACHE)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_trees(trees):
    for tree in trees:
        subprocess.run([sys.executable, "-m", "compileall", "-q",
                        os.path.join(tree, "pegasus")], env=python_env(tree), check=True)


def load():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", default=os.path.normpath(os.path.join(HERE, "..")))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="short,sleep,bcast")
    ap.add_argument("--hosts", type=int, default=64)
    args = ap.parse_args()
    trees, only = args.trees.split(","), args.only.split(",")
    work = tempfile.mkdtemp(prefix="pegasus-tp-", dir="/tmp")
    os.chmod(work, 0o755)  # sshd reads authorized_keys as the test user
    results = {}
    compile_trees(trees)
    try:
        with Cluster(os.path.join(work, "cluster"), n_hosts=args.hosts) as cluster:
            cluster.seed_known_hosts()
            table = workloads(cluster.aliases)
            for r in range(args.rounds):
                for name in only:
                    for tree in trees if r % 2 == 0 else trees[::-1]:
                        wall, cpu = run(tree, os.path.join(work, "run"), table[name],
                                        cluster.ssh_config)
                        results.setdefault((name, tree), []).append((wall, cpu))
                        print("round %d %-6s %-30s wall %6.2f s  cpu %5.2f s  load %s"
                              % (r + 1, name, tree, wall, cpu, load()), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name in only:
        for tree in trees:
            got = results[(name, tree)]
            print("%-6s %-30s median wall %6.2f s  cpu %5.2f s   walls %s"
                  % (name, tree, statistics.median(w for w, _ in got),
                     statistics.median(c for _, c in got), " ".join("%.2f" % w for w, _ in got)))


if __name__ == "__main__":
    main()
