"""Crash soak: SIGKILL ``pegasus q`` again and again during one run of many jobs.

The long version of ``tests/test_crash_safety.py::test_random_sigkill_during_a_run``.
Starts its own loopback OpenSSH cluster (tests/cluster.py: one sshd per
127.0.0.x; must run as root), writes a queue of --jobs short jobs that each
append their unique id to a marker file with one ``echo id >> file`` as their
last command, and then --crashes times:

  1. starts ``pegasus q -d`` (a daemon, so it is alive whenever the kill comes),
  2. kills it with SIGKILL at a random instant (seeded): with probability
     --startup-share during its start-up (imports, connecting, recovering the
     last crash: uniform over the shortest start-up timed so far), otherwise
     at uniform(0, W) s after its first job was framed (mid-run); W starts at
     --window and adapts so that the jobs last the crashes (--no-adapt),
  3. checks what the crash left: queue.yaml, consumed.yaml and interrupted.yaml
     parse; no id ran twice; every id is in queue.yaml, in interrupted.yaml, in
     the marker, or in the dead run's journal;
  4. on every other crash recovers the dead run itself (``QueueFile.recover``,
     what ``pegasus q`` does first) and checks that every id is in exactly one
     place: queue.yaml, interrupted.yaml (outcome unknown), or ran; the other
     times the next ``pegasus q`` recovers (and may be killed while it does).

Then one plain ``pegasus q`` runs the queue to completion, and the script
prints: crashes survived, jobs lost, jobs run twice, jobs interrupted (outcome
unknown, and how many of those the marker shows ran), total wall time. It
stops at the first broken invariant, prints the evidence and exits 1.

With --fail-first every job has ``retries: 1`` and fails its first attempt
(noted in a file of attempts), so crashes also fall between two attempts;
one more invariant: no job's first attempt ran twice.

Run:  /tmp/venv/bin/python benchmarks/crash_soak.py [--crashes 100] [--jobs 200]
          [--hosts 2] [--slots 1] [--seed N] [--local] [--fail-first] [--keep] [-v]
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from cluster import Cluster  # noqa: E402

from pegasus import records  # noqa: E402
from pegasus.queuefile import QueueFile  # noqa: E402

ID = re.compile(r"echo (\S+) >> ")


class Broken(Exception):
    """An invariant does not hold (the message has the evidence)."""


def load(text):
    return yaml.load(text, Loader=yaml.BaseLoader)


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def ids_in(entries):
    out = collections.Counter()
    for entry in entries or []:
        command = entry["command"] if isinstance(entry, dict) else entry
        match = ID.search(command)
        if not match:
            raise Broken("an entry that is none of ours: %r" % (entry,))
        out[match.group(1)] += 1
    return out


class Soak:
    def __init__(self, args, folder, marker_dir, hosts_yaml, ssh_config):
        self.args = args
        self.folder = folder
        self.marker = os.path.join(marker_dir, "marker-" + uuid.uuid4().hex)
        open(self.marker, "w").close()
        os.chmod(self.marker, 0o666)  # remote jobs run as the cluster's test user
        with open(self.file("hosts.yaml"), "w") as f:
            f.write(hosts_yaml)
        tag = uuid.uuid4().hex[:8]
        self.ids = ["j%04d-%s" % (i, tag) for i in range(args.jobs)]
        pause = "sleep %s; " % args.sleep if args.sleep else ""
        self.attempts = os.path.join(marker_dir, "attempts-" + uuid.uuid4().hex)
        open(self.attempts, "w").close()
        os.chmod(self.attempts, 0o666)
        with open(self.file("queue.yaml"), "w") as f:
            for job_id in self.ids:
                if args.fail_first:  # its first attempt fails, once noted in `attempts`
                    f.write("- command: 'grep -qx %s %s || { echo %s >> %s; exit 1; }; %secho "
                            "%s >> %s'\n  retries: 1\n" % (job_id, self.attempts, job_id,
                                                           self.attempts, pause, job_id,
                                                           self.marker))
                else:
                    f.write("- '%secho %s >> %s'\n" % (pause, job_id, self.marker))
        self.command = [sys.executable, "-m", "pegasus", "q"]
        if ssh_config:
            self.command += ["--ssh-config", ssh_config]
        self.env = dict(os.environ, NO_COLOR="1")
        self.env.pop("PEGASUS_FAULT", None)
        self.rng = random.Random(args.seed)
        self.phases = collections.Counter()
        self.recovered_by = collections.Counter()
        self.startups = []  # seconds from spawn to the first job frame
        self.window = args.window

    def file(self, name):
        return os.path.join(self.folder, name)

    # -- state

    def ran(self):
        return collections.Counter(read(self.marker).split())

    def queue(self):
        text = read(self.file("queue.yaml"))
        if text is None:
            raise Broken("queue.yaml is gone")
        return ids_in(self._parse("queue.yaml", text))

    def interrupted(self):
        return ids_in(self._parse("interrupted.yaml", read(self.file("interrupted.yaml")) or ""))

    def consumed(self):
        return ids_in(self._parse("consumed.yaml", read(self.file("consumed.yaml")) or ""))

    def journals(self):
        return glob.glob(os.path.join(glob.escape(self.folder), ".queue.yaml.journal-*"))

    def _parse(self, name, text):
        try:
            return load(text)
        except yaml.YAMLError as err:
            raise Broken("%s does not parse: %s" % (name, err))

    def settled(self):
        """Jobs that ran or are interrupted (a dead run's journal not counted)."""
        return len(set(self.ran()) | set(self.interrupted()))

    # -- invariants

    def check_unrecovered(self, state):
        ran, queue, interrupted = self.ran(), self.queue(), self.interrupted()
        self.consumed()
        journaled = "".join(read(p) or "" for p in self.journals())
        where = "%s\nran %d, queue %d, interrupted %d" % (
            state, len(ran), sum(queue.values()), sum(interrupted.values()))
        self.check_attempts(where)
        twice = sorted(i for i, n in ran.items() if n > 1)
        if twice:
            raise Broken("ran more than once: %s\n%s" % (twice, where))
        for job_id in self.ids:
            if queue[job_id] + interrupted[job_id] > 1:
                raise Broken("%s is listed twice\n%s" % (job_id, where))
            if queue[job_id] and ran[job_id]:
                raise Broken("%s ran but is in the queue\n%s" % (job_id, where))
            if not (queue[job_id] or interrupted[job_id] or ran[job_id]
                    or job_id in journaled):
                raise Broken("%s is lost\n%s" % (job_id, where))

    def check_attempts(self, where):
        """--fail-first: no job's first attempt ran twice (each attempt at most once)."""
        twice = sorted(i for i, n in collections.Counter(read(self.attempts).split()).items()
                       if n > 1)
        if twice:
            raise Broken("a first attempt ran more than once: %s\n%s" % (twice, where))

    def check(self, state):
        ran, queue, interrupted = self.ran(), self.queue(), self.interrupted()
        consumed = self.consumed()
        where = "%s\nran %d, queue %d, interrupted %d" % (
            state, len(ran), sum(queue.values()), sum(interrupted.values()))
        self.check_attempts(where)
        twice = sorted(i for i, n in ran.items() if n > 1)
        if twice:
            raise Broken("ran more than once: %s\n%s" % (twice, where))
        for job_id in self.ids:
            places = (queue[job_id] + interrupted[job_id]
                      + (1 if ran[job_id] and not interrupted[job_id] else 0))
            if places != 1:
                raise Broken("%s is in %d places\n%s" % (job_id, places, where))
            if queue[job_id] and ran[job_id]:
                raise Broken("%s ran but is back in the queue\n%s" % (job_id, where))
            if ran[job_id] and not consumed[job_id]:
                raise Broken("%s ran but is not in consumed.yaml\n%s" % (job_id, where))
        return ran, queue, interrupted

    # -- one crash

    def crash(self, number):
        args = self.args
        startup = self.rng.random() < args.startup_share
        # Start-up kills land before the first job: within the shortest start-up
        # seen so far (imports, connecting, recovery), or --startup-window at first.
        fraction = self.rng.random()
        delay = fraction * (min(self.startups, default=args.startup_window) if startup
                            else self.window)
        settled_before = self.settled()
        out_path = os.path.join(self.folder, "..", "run-%03d.out" % number)
        with open(out_path, "w") as out:
            proc = subprocess.Popen(self.command + ["-d"], cwd=self.folder, env=self.env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        started = time.monotonic()
        phase = "startup"
        if not startup:
            phase = "running"
            deadline = started + 60
            while "=== run " not in (read(out_path) or ""):
                if proc.poll() is not None:
                    raise Broken("run %d ended by itself (%s) before any job:\n%s"
                                 % (number, proc.returncode, read(out_path)))
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    raise Broken("run %d started no job within 60 s:\n%s"
                                 % (number, read(out_path)))
                time.sleep(0.002)
            self.startups.append(time.monotonic() - started)
            started = time.monotonic()
        try:
            proc.wait(timeout=delay)  # the random instant: the soak's input
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        status = proc.wait(timeout=60)
        if status != -signal.SIGKILL:
            raise Broken("run %d ended by itself (%s):\n%s" % (number, status, read(out_path)))
        self.phases[phase] += 1
        if phase == "running" and args.adapt:
            # Spread the crashes over the whole run: aim at settling, per crash, 60 %
            # of the jobs left over the crashes left (the final run does the rest):
            # widen the window slowly when the last mid-run crash settled fewer,
            # narrow it fast when it settled more.
            left = args.crashes - number
            target = 0.6 * (len(self.ids) - settled_before) / (left + 1)
            grew = self.settled() - settled_before
            self.window = min(5.0, max(0.002, self.window * (1.1 if grew < target else 0.7)))
        state = "crash %d (%s, +%.3f s); output tail:\n%s" % (
            number, phase, delay, (read(out_path) or "")[-2000:])
        self.check_unrecovered(state)
        if number % 2 == 0:
            records.recover(QueueFile(self.file("queue.yaml")))
            self.recovered_by["soak"] += 1
            if self.journals():
                raise Broken("a journal is left after recovery: %s" % self.journals())
            self.check(state)
        else:
            self.recovered_by["next pegasus"] += 1
        if self.args.verbose:
            ran, queue = self.ran(), self.queue()
            print("crash %3d %-7s +%.3f s (window %.3f): ran %d, queue %d, interrupted %d"
                  % (number, phase, delay, self.window, len(ran), sum(queue.values()),
                     sum(self.interrupted().values())), flush=True)

    def finish(self):
        res = subprocess.run(self.command, cwd=self.folder, env=self.env,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=3600)
        if res.returncode != 0:
            raise Broken("the final run exited %d:\n%s%s" % (res.returncode, res.stdout[-3000:],
                                                            res.stderr[-3000:]))
        ran, queue, interrupted = self.check("after the final run")
        if sum(queue.values()):
            raise Broken("the final run left %d jobs in the queue" % sum(queue.values()))
        if self.journals():
            raise Broken("the final run left a journal: %s" % self.journals())
        return ran, interrupted


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crashes", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--hosts", type=int, default=2, help="sshd nodes (default 2)")
    parser.add_argument("--slots", type=int, default=1, help="sub-nodes per host (default 1)")
    parser.add_argument("--sleep", default="", help="seconds each job sleeps before its echo")
    parser.add_argument("--window", type=float, default=0.05,
                        help="mid-run kills land uniform(0, WINDOW) s after the first job "
                             "is framed (the starting value; see --no-adapt)")
    parser.add_argument("--no-adapt", dest="adapt", action="store_false",
                        help="keep WINDOW fixed (by default it adapts after each "
                             "mid-run crash, so that the jobs last the crashes)")
    parser.add_argument("--startup-share", type=float, default=0.2,
                        help="share of kills timed from the start of the process")
    parser.add_argument("--startup-window", type=float, default=0.3,
                        help="start-up kills land before this many seconds until a "
                             "start-up has been timed (then: the shortest one seen)")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--fail-first", action="store_true",
                        help="each job has 'retries: 1' and fails its first attempt, so "
                             "crashes also fall between attempts")
    parser.add_argument("--local", action="store_true",
                        help="localhost sub-nodes (local processes) instead of the sshd cluster")
    parser.add_argument("--keep", action="store_true", help="keep the run folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per crash")
    args = parser.parse_args(argv)

    root = tempfile.mkdtemp(prefix="pegasus-soak-")
    os.chmod(root, 0o755)
    folder = os.path.join(root, "run")
    os.makedirs(folder)
    cluster = None
    wall0 = time.monotonic()
    try:
        if args.local:
            slots = ", ".join("s%d" % i for i in range(args.slots))
            hosts = "- hostname: localhost\n  slot: [%s]\n" % slots
            soak = Soak(args, folder, root, hosts, None)
            where = "localhost x %d slots" % args.slots
        else:
            cluster = Cluster(os.path.join(root, "cluster"), n_hosts=args.hosts)
            cluster.start()
            names = ", ".join(cluster.aliases)
            if args.slots > 1:
                slots = ", ".join("s%d" % i for i in range(args.slots))
                hosts = "- hostname: [%s]\n  slot: [%s]\n" % (names, slots)
            else:
                hosts = "- hostname: [%s]\n" % names
            soak = Soak(args, folder, cluster.scratch, hosts, cluster.ssh_config)
            where = "%d sshd nodes x %d slots" % (args.hosts, args.slots)
        print("crash soak: %d jobs on %s, %d crashes, seed %d"
              % (args.jobs, where, args.crashes, args.seed), flush=True)
        done = 0
        for number in range(1, args.crashes + 1):
            if not sum(soak.queue().values()):
                if soak.journals():  # the dead run may have jobs to put back
                    records.recover(QueueFile(soak.file("queue.yaml")))
                    soak.recovered_by["soak"] += 1
                    soak.check("recovered after crash %d" % done)
                if not sum(soak.queue().values()):
                    print("the queue is empty after %d crashes; no more to crash" % done)
                    break
            soak.crash(number)
            done = number
        if soak.journals():
            records.recover(QueueFile(soak.file("queue.yaml")))  # so the count below is exact
            soak.recovered_by["soak"] += 1
            soak.check("recovered after crash %d" % done)
        final_jobs = sum(soak.queue().values())
        ran, interrupted = soak.finish()
    except Broken as err:
        print("INVARIANT BROKEN: %s" % err)
        print("run folder kept: %s" % folder)
        args.keep = True
        return 1
    finally:
        if cluster is not None:
            cluster.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    wall = time.monotonic() - wall0
    lost = [i for i in soak.ids if not ran[i] and not interrupted[i]]
    twice = [i for i, n in ran.items() if n > 1]
    ran_too = sum(1 for i in interrupted if ran[i])
    rows = [
        ("crashes survived (SIGKILL)", "%d (%d at start-up, %d mid-run)"
         % (done, soak.phases["startup"], soak.phases["running"])),
        ("recovered by the soak / by the next pegasus", "%d / %d"
         % (soak.recovered_by["soak"], soak.recovered_by["next pegasus"])),
        ("jobs", "%d (%d left for the final run)" % (len(soak.ids), final_jobs)),
        ("jobs run exactly once, settled", "%d" % sum(1 for i in soak.ids
                                                    if ran[i] == 1 and not interrupted[i])),
        ("jobs lost", "%d" % len(lost)),
        ("jobs run twice", "%d" % len(twice)),
        ("jobs interrupted (outcome unknown)", "%d (the marker shows %d of them ran)"
         % (len(interrupted), ran_too)),
        ("total wall time", "%.1f s" % wall),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print("%-*s  %s" % (width, name, value))
    if args.keep:
        print("run folder kept: %s" % folder)
    return 1 if lost or twice else 0


if __name__ == "__main__":
    sys.exit(main())
