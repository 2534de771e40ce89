"""Pegasus's CPU while the head job waits for GPU slots (issue 11: under 2 %).

    python benchmarks/bench_slot_wait.py [--seconds 20] [--behind 1000]

On localhost with ``slots: 4``: a 4-slot job runs (it sleeps), the next
4-slot job waits at the head, and a thousand entries wait behind it. The
figure is Pegasus's own CPU (user + system, from /proc) over the window,
as a percentage of one core; the running job's ``sleep`` is another process
and is not counted. Prints one table; no threshold is asserted.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def wait_for(predicate, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            sys.exit("timed out")
        time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="the measured window")
    parser.add_argument("--behind", type=int, default=1000, help="entries behind the head")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="pegasus-slot-wait-")
    started, go = os.path.join(folder, "started"), os.path.join(folder, "go")
    with open(os.path.join(folder, "hosts.yaml"), "w") as f:
        f.write("- hostname: localhost\n  slots: 4\n")
    with open(os.path.join(folder, "queue.yaml"), "w") as f:
        f.write(f"- command: touch {started}; while [ ! -e {go} ]; do sleep 0.2; done\n"
                "  slots: 4\n- command: echo waits\n  slots: 4\n")
        f.writelines(f"- echo behind {i}\n" for i in range(args.behind))
    proc = subprocess.Popen([sys.executable, "-m", "pegasus", "q"], cwd=folder,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            env=dict(os.environ, NO_COLOR="1"))
    try:
        wait_for(lambda: os.path.exists(started))
        time.sleep(1.0)  # the start-up check and the first take are behind us
        before, clock = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.seconds)
        used, elapsed = cpu_seconds(proc.pid) - before, time.monotonic() - clock
        open(go, "w").close()
        status = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{'window':<40}{elapsed:.1f} s")
    print(f"{'pegasus CPU while the head waits':<40}{100 * used / elapsed:.2f} % of a core")
    print(f"{'exit status after the wait':<40}{status}")


if __name__ == "__main__":
    main()
