"""Crash safety end to end: no job lost, none launched twice.

Two kinds of crash, both through the real ``pegasus`` CLI:

- ``PEGASUS_FAULT=<step>`` (see ``pegasus/faults.py``) makes Pegasus exit at
  once after that step of the first job that passes it; the next run must
  recover: a job taken but never launched runs exactly once, a job launched
  but never settled is listed in interrupted.yaml with its sub-node and is not
  run again (``pegasus requeue`` puts it back). Each step runs on ``localhost``
  (local processes) and on the sshd test cluster with one sub-node (so "the
  crashed job" is exactly one job), and on two sshd nodes (the crash may also
  catch the other node's job).
- SIGKILL at random instants (delays drawn from a seeded RNG: they are the
  test's input, not waits for anything) during a run of many short jobs on
  2 nodes x 2 slots and on 4 local slots, restarted each time, then run to
  completion. ``benchmarks/crash_soak.py`` is the long version (a smoke run of
  it is here too).

A crashed run is always the real command; on ``localhost`` most of the runs
that recover from it run through ``cli.main`` in this process
(``run_in_process``: what they find is in files), except in
``test_requeue_runs_the_interrupted_job`` and the random kills.

Every job appends its unique id to a marker file with one ``echo id >> file``
as its last command, so "it ran" means the id is in the file. The nodes of the
local test cluster share this machine's file system, so the marker is read
directly. The invariants: queue.yaml, consumed.yaml and interrupted.yaml
parse; no id ran twice; every id is somewhere (``Folder.check_unrecovered``:
a dead run's journal counts) and, once the dead run is recovered, in exactly
one place (``Folder.check``): still in queue.yaml, or in interrupted.yaml
(outcome unknown: it may or may not have run), or it ran.

``test_queue_edited_between_a_crash_and_the_restart`` shows the limit of the
journal's void rule (a queue file changed between the crash and the restart)
and fails until that is fixed; see docs/reliability.md, "Known limits".

Nothing waits with a fixed sleep.
"""
import collections
import glob
import os
import random
import re
import signal
import subprocess
import sys
import uuid

import pytest
import yaml

from pegasus import faults
from pegasus import records
from pegasus.queuefile import QueueFile
from pegasus.records import STOPPED

LAUNCH = faults.STEPS.index("launch-journaled")
BEFORE_LAUNCH = faults.STEPS[:LAUNCH]  # the command was not sent
NOT_SENT = BEFORE_LAUNCH + ("launch-journaled",)
# Queue mode journals a job's launch with its take (one fsync less a job): a
# crash once the take's rewrite is done leaves it interrupted, may have run.
UNKNOWN = ("queue-rewritten", "consumed-appended", "launch-journaled", "exec-sent",
           "job-finished")  # settled as interrupted
ID = re.compile(r"echo (\S+) >> ")
INTERRUPTED = re.compile(r"^# interrupted \S+ \S+(?: #\d+)? for (\[[^\]]*\]): (.*)$")
PUT_BACK_MSG = "a previous Pegasus stopped before starting"
INTERRUPTED_MSG = "a previous Pegasus stopped while"
TAKEN_ID = re.compile(r"^# taken \S+ \S+ #(\d+) for ", re.M)
FRAME_ID = re.compile(r"=== run #(\d+) '")
CLUSTER = pytest.param("cluster", marks=pytest.mark.sshd)  # "where": reached by getfixturevalue


# ---------------------------------------------------------------- a run folder

def load(text):
    return yaml.load(text, Loader=yaml.BaseLoader)


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def ids_in(entries):
    """Counter of the job ids in a list of queue entries (strings or mappings)."""
    out = collections.Counter()
    for entry in entries or []:
        command = entry["command"] if isinstance(entry, dict) else entry
        match = ID.search(command)
        assert match, "an entry that is none of ours: %r" % (entry,)
        out[match.group(1)] += 1
    return out


class Folder:
    """queue.yaml, hosts.yaml and a marker file; runs ``pegasus q`` there: a run
    with a ``fault`` by ``run_pegasus``, the others by ``run_again`` (default:
    ``run_pegasus`` too)."""

    def __init__(self, path, hosts, marker_dir, run_pegasus, ssh_config=None, run_again=None):
        self.path = str(path)
        os.makedirs(self.path, exist_ok=True)
        with open(self.file("hosts.yaml"), "w") as f:
            f.write(hosts)
        self.marker = os.path.join(marker_dir, "marker-" + uuid.uuid4().hex)
        open(self.marker, "w").close()
        os.chmod(self.marker, 0o666)  # remote jobs run as the cluster's test user
        self.run_pegasus = run_pegasus
        self.run_again = run_again or run_pegasus
        self.args = ["q"] + (["--ssh-config", ssh_config] if ssh_config else [])
        self.ids = []

    def file(self, name):
        return os.path.join(self.path, name)

    def write_queue(self, n, sleep=None, slots=()):
        """n jobs; with ``slots``, job i asks for slots[i % len(slots)] slots."""
        tag = uuid.uuid4().hex[:8]
        self.ids = ["j%02d-%s" % (i, tag) for i in range(n)]
        pause = "sleep %s; " % sleep if sleep else ""
        with open(self.file("queue.yaml"), "w") as f:
            for i, job_id in enumerate(self.ids):
                command = "'%secho %s >> %s'" % (pause, job_id, self.marker)
                f.write("- {command: %s, slots: %d}\n" % (command, slots[i % len(slots)])
                        if slots else "- %s\n" % command)
        return self.ids

    def run(self, *args, fault=None, timeout=60, env=None):
        run = self.run_pegasus if fault else self.run_again
        res = run(self.args + list(args), self.path, timeout=timeout,
                  env=dict(env or {}, PEGASUS_FAULT=fault, NO_COLOR="1"))
        res.output = res.stdout + res.stderr
        return res

    def requeue(self):
        res = self.run_again(["requeue"], self.path, env={"PEGASUS_FAULT": None})
        res.output = res.stdout + res.stderr
        return res

    # -- what is where

    def ran(self):
        return collections.Counter(read(self.marker).split())

    def queue(self):
        text = read(self.file("queue.yaml"))
        assert text is not None, "queue.yaml is gone"
        return ids_in(load(text))

    def consumed(self):
        return ids_in(load(read(self.file("consumed.yaml")) or ""))

    def interrupted(self):
        """[(sub-node label, reason, id)] from interrupted.yaml, in order."""
        text = read(self.file("interrupted.yaml")) or ""
        chunks = []  # [comment match, entry text]
        for line in text.splitlines(True):
            if line.startswith("#"):
                comment = INTERRUPTED.match(line.rstrip("\n"))
                assert comment, "unexpected comment in interrupted.yaml: %r" % line
                chunks.append([comment, ""])
            elif line.strip():
                assert chunks, "interrupted.yaml: an entry without its comment:\n" + text
                chunks[-1][1] += line
        out = []
        for comment, body in chunks:
            (job_id,) = list(ids_in(load(body)).elements())
            out.append((comment.group(1), comment.group(2), job_id))
        assert collections.Counter(i for _, _, i in out) == ids_in(load(text)), text
        return out

    def journals(self):
        return glob.glob(os.path.join(glob.escape(self.path), ".queue.yaml.journal-*"))

    def compactions(self):
        """A journal compaction's new files (none once it is renamed or recovered)."""
        return glob.glob(os.path.join(glob.escape(self.path), ".queue.yaml.jcompact-*"))

    def check_unrecovered(self, state=""):
        """What a crash left, before any recovery: the files parse, nothing ran twice,
        and every id is somewhere: queue.yaml, interrupted.yaml, the marker, or the
        journal of a dead run (which the next start settles)."""
        for name in ("queue.yaml", "consumed.yaml", "interrupted.yaml"):
            load(read(self.file(name)) or "")  # a torn file does not parse
        ran, queue = self.ran(), self.queue()
        interrupted = collections.Counter(i for _, _, i in self.interrupted())
        journaled = "".join(read(path) or "" for path in self.journals())
        where = "%s\nran: %s\nqueue: %s\ninterrupted: %s\njournals:\n%s" % (
            state, sorted(ran), sorted(queue), sorted(interrupted), journaled)
        twice = sorted(i for i, n in ran.items() if n > 1)
        assert not twice, "ran more than once: %s%s" % (twice, where)
        for job_id in self.ids:
            assert queue[job_id] + interrupted[job_id] <= 1, "%s twice%s" % (job_id, where)
            if queue[job_id]:
                assert job_id not in ran, "%s ran but is in the queue%s" % (job_id, where)
            assert (queue[job_id] or interrupted[job_id] or ran[job_id]
                    or job_id in journaled), "%s is lost%s" % (job_id, where)

    def check(self, state=""):
        """The invariants after a crash has been recovered; returns (ran, interrupted)."""
        ran, queue, consumed = self.ran(), self.queue(), self.consumed()
        interrupted = collections.Counter(i for _, _, i in self.interrupted())
        where = "%s\nran: %s\nqueue: %s\ninterrupted: %s" % (
            state, sorted(ran), sorted(queue), sorted(interrupted))
        assert set(ran) | set(queue) | set(interrupted) <= set(self.ids), where
        twice = sorted(i for i, n in ran.items() if n > 1)
        assert not twice, "ran more than once: %s%s" % (twice, where)
        for job_id in self.ids:
            places = (queue[job_id] + interrupted[job_id]
                      + (1 if ran[job_id] and not interrupted[job_id] else 0))
            assert places == 1, "%s is in %d places%s" % (job_id, places, where)
            if queue[job_id]:
                assert job_id not in ran, "%s ran but is back in the queue%s" % (job_id, where)
        for job_id in ran:
            assert consumed[job_id] >= 1, "%s ran but is not in consumed.yaml" % job_id
        return ran, interrupted


@pytest.fixture
def lc(cluster):
    """The local cluster: its nodes share this file system (the marker is read here)."""
    if not getattr(cluster, "supports_faults", False):
        pytest.skip("needs the local sshd test cluster (shared file system)")
    return cluster


def folder_for(where, request, tmp_path, run_pegasus, hosts=None, run_again=None):
    """The run folder; ``run_again`` is for ``local`` only (the cluster's runs are
    all the real command)."""
    if where == "local":
        return Folder(tmp_path / "run", hosts or "- localhost\n", str(tmp_path), run_pegasus,
                      run_again=run_again)
    cluster = request.getfixturevalue("lc")
    return Folder(tmp_path / "run", hosts or "- node-1\n", cluster.scratch, run_pegasus,
                  cluster.ssh_config)


# ---------------------------------------------------------------- one fault, one sub-node

@pytest.mark.parametrize("step", faults.STEPS)
@pytest.mark.parametrize("where", ["local", CLUSTER])
def test_fault_at_each_step_one_sub_node(where, step, request, tmp_path, run_pegasus,
                                         run_in_process):
    f = folder_for(where, request, tmp_path, run_pegasus, run_again=run_in_process)
    node = "[localhost]" if where == "local" else "[node-1]"
    ids = f.write_queue(3)
    crashed, rest = ids[0], ids[1:]

    first = f.run(fault=step)
    assert first.returncode == faults.EXIT_STATUS, first.output
    # What the crash left, before any recovery: the fault point is where it says.
    assert len(f.journals()) == 1, "the dead run's journal should be left for recovery"
    assert f.queue() == collections.Counter(ids if step == "taken-journaled" else rest)
    if faults.STEPS.index(step) < faults.STEPS.index("consumed-appended"):
        assert read(f.file("consumed.yaml")) is None
    else:
        assert f.consumed() == collections.Counter([crashed])
    if step in NOT_SENT:
        assert crashed not in f.ran(), "the command ran though it was never sent"
    if step in ("job-finished", "finish-journaled"):
        assert f.ran() == collections.Counter([crashed])

    os.unlink(f.file(".queue.yaml.job-id"))  # as if its write were lost (not fsynced)
    second = f.run()
    assert second.returncode == 0, second.output
    ran, interrupted = f.check("after the run that recovered from %s" % step)
    taken_ids = TAKEN_ID.findall(read(f.file("consumed.yaml")))
    assert len(taken_ids) == len(set(taken_ids)), "a job id was handed out twice"
    assert min(map(int, FRAME_ID.findall(second.stdout))) > 1, "id 1 went to the crashed take"
    assert f.queue() == collections.Counter(), "queue.yaml should end empty"
    assert f.journals() == [], "a clean run leaves no journal"
    assert set(rest) <= set(ran) and all(ran[i] == 1 for i in rest)
    assert rest == [i for i in read(f.marker).split() if i in rest], "queue order kept"

    listed = f.interrupted()
    if step in UNKNOWN:
        assert listed == [(node, STOPPED, crashed)], read(f.file("interrupted.yaml"))
        assert f" #1 for {node}: " in read(f.file("interrupted.yaml"))  # the crashed job's id
        assert INTERRUPTED_MSG in second.output and node in second.output, second.output
        assert "pegasus requeue" in second.output, second.output
        assert PUT_BACK_MSG not in second.output, second.output
        if step in NOT_SENT:
            assert crashed not in ran
        if step == "job-finished":
            assert ran[crashed] == 1
    else:  # taken-journaled (the queue was never rewritten) or finish-journaled
        assert listed == [], read(f.file("interrupted.yaml"))
        assert ran[crashed] == 1, "the crashed job should have run exactly once"
        assert INTERRUPTED_MSG not in second.output, second.output
        assert PUT_BACK_MSG not in second.output, second.output


@pytest.mark.parametrize("where", ["local", CLUSTER])
def test_requeue_runs_the_interrupted_job(where, request, tmp_path, run_pegasus):
    f = folder_for(where, request, tmp_path, run_pegasus)
    ids = f.write_queue(3)
    assert f.run(fault="launch-journaled").returncode == faults.EXIT_STATUS
    second = f.run()
    assert second.returncode == 0, second.output
    assert [i for _, _, i in f.interrupted()] == [ids[0]]
    assert ids[0] not in f.ran()

    moved = f.requeue()
    assert moved.returncode == 0, moved.output
    assert "1 interrupted job moved" in moved.output, moved.output
    assert f.interrupted() == []
    assert f.queue() == collections.Counter([ids[0]])

    third = f.run()
    assert third.returncode == 0, third.output
    ran, _ = f.check("after requeue and a run")
    assert ran == collections.Counter(ids)
    assert f.queue() == collections.Counter()
    assert f.journals() == []
    again = f.requeue()
    assert "0 interrupted jobs moved" in again.output, again.output
    assert f.queue() == collections.Counter()


# ---------------------------------------------------------------- one fault, two nodes

@pytest.mark.sshd
@pytest.mark.parametrize("step", faults.STEPS)
def test_fault_at_each_step_two_nodes(step, request, tmp_path, run_pegasus):
    """Two jobs in flight at once: the crash may catch the other one too."""
    f = folder_for("cluster", request, tmp_path, run_pegasus, hosts="- node-1\n- node-2\n")
    ids = f.write_queue(6)
    first = f.run(fault=step)
    assert first.returncode == faults.EXIT_STATUS, first.output
    if step in NOT_SENT:
        assert not f.ran(), "a job ran though none was sent"
    second = f.run()
    assert second.returncode == 0, second.output
    ran, _ = f.check("after the run that recovered from %s" % step)
    assert f.queue() == collections.Counter()
    assert f.journals() == []
    listed = f.interrupted()
    nodes = [node for node, _, _ in listed]
    assert set(nodes) <= {"[node-1]", "[node-2]"} and len(nodes) == len(set(nodes)), listed
    assert all(reason == STOPPED for _, reason, _ in listed), listed
    if step == "taken-journaled":
        assert listed == []
        assert ran == collections.Counter(ids)
    elif step in UNKNOWN:
        assert 1 <= len(listed) <= 2, listed
        assert INTERRUPTED_MSG in second.output, second.output
    else:  # finish-journaled: the crashed job is settled; the other may have been running
        assert len(listed) <= 1, listed


@pytest.mark.parametrize("step", ["queue-rewritten", "consumed-appended"])
def test_broadcast_job_taken_but_not_launched_goes_back_to_the_queue(step, tmp_path,
                                                                     run_pegasus,
                                                                     run_in_process):
    """Broadcast mode journals each sub-node's launch on its own: a job taken
    but launched nowhere yet is put back by the next start, and runs once."""
    f = Folder(tmp_path / "run", "- localhost\n", str(tmp_path), run_pegasus,
               run_again=run_in_process)
    f.args = ["b"]
    ids = f.write_queue(2)
    first = f.run(fault=step)
    assert first.returncode == faults.EXIT_STATUS, first.output
    assert not f.ran()
    second = f.run()
    assert second.returncode == 0, second.output
    assert PUT_BACK_MSG + " 1 job it had taken; it is back" in second.output, second.output
    assert INTERRUPTED_MSG not in second.output, second.output
    assert f.interrupted() == []
    assert f.ran() == collections.Counter(ids)
    assert f.queue() == collections.Counter()
    assert f.journals() == []


# ---------------------------------------------------------------- a crash while compacting

@pytest.mark.parametrize("step", faults.COMPACT_STEPS)
def test_fault_while_compacting_the_journal(step, tmp_path, run_pegasus, run_in_process):
    """The journal outgrows a tiny limit (``PEGASUS_JOURNAL_LIMIT``) after a few jobs
    and is compacted as a job finishes, the other slot's job maybe in flight; Pegasus
    dies at each step of that compaction. The next run recovers: every job ran once
    or is in interrupted.yaml, none is lost, no journal and no new file is left."""
    f = Folder(tmp_path / "run", "- hostname: localhost\n  slot: [a, b]\n", str(tmp_path),
               run_pegasus, run_again=run_in_process)
    f.write_queue(12)
    limit = {"PEGASUS_JOURNAL_LIMIT": "1000"}
    first = f.run(fault=step, env=limit)
    assert first.returncode == faults.EXIT_STATUS, first.output
    f.check_unrecovered("after a crash at " + step)
    assert len(f.journals()) == 1
    assert len(f.compactions()) == (0 if step == "compact-renamed" else 1)
    (journal,) = f.journals()
    assert (os.path.getsize(journal) <= 1000) == (step == "compact-renamed")
    assert sum(f.ran().values()) >= 2  # compaction came after some jobs

    second = f.run(env=limit)
    assert second.returncode == 0, second.output
    ran, interrupted = f.check("after the run that recovered from " + step)
    assert f.queue() == collections.Counter()
    assert f.journals() == [] and f.compactions() == []
    assert set(ran) | set(interrupted) == set(f.ids)
    assert len(interrupted) <= 2  # at most the jobs in flight on the two slots
    assert all(reason == STOPPED for _, reason, _ in f.interrupted())


# ---------------------------------------------------------------- a crash between attempts

@pytest.mark.parametrize("step", faults.RETRY_STEPS)
@pytest.mark.parametrize("where", ["local", CLUSTER])
def test_fault_between_the_attempts_of_a_retried_job(where, step, request, tmp_path,
                                                     run_pegasus, run_in_process):
    """A job with 'retries: 1' fails its first attempt (a counter file says which
    attempt it is) and would succeed at its second; Pegasus dies between them:
    after the failed attempt's end and the retry are journaled (the job goes
    back to the head of the queue with 'retries: 0' and runs once more), or
    after the second attempt's launch is journaled, before it is sent (outcome
    unknown: interrupted.yaml, not run). No attempt is lost or run twice."""
    f = folder_for(where, request, tmp_path, run_pegasus, run_again=run_in_process)
    node = "[localhost]" if where == "local" else "[node-1]"
    counter = os.path.join(os.path.dirname(f.marker), "attempts-" + uuid.uuid4().hex)
    open(counter, "w").close()
    os.chmod(counter, 0o666)
    retried, other = f.ids = ["j00-" + uuid.uuid4().hex[:8], "j01-" + uuid.uuid4().hex[:8]]
    command = ('n=$(cat %s); printf "x\\n" >> %s; [ -n "$n" ] || exit 1; echo %s >> %s'
               % (counter, counter, retried, f.marker))
    with open(f.file("queue.yaml"), "w") as out:
        out.write(yaml.safe_dump([{"command": command, "retries": "1"},
                                  "echo %s >> %s" % (other, f.marker)]))

    first = f.run(fault=step)
    assert first.returncode == faults.EXIT_STATUS, first.output
    assert read(counter) == "x\n", "the first attempt ran once, the second not yet"
    f.check_unrecovered("after a crash at " + step)

    second = f.run()
    ran, interrupted = f.check("after the run that recovered from " + step)
    assert f.queue() == collections.Counter() and f.journals() == []
    assert ran[other] == 1
    if step == "retry-journaled":
        assert second.returncode == 0, second.output
        assert PUT_BACK_MSG in second.output, second.output
        assert ran[retried] == 1 and read(counter) == "x\nx\n"
        assert load(read(f.file("consumed.yaml")))[-2]["retries"] == "0"  # what it had left
    else:
        assert second.returncode == 0, second.output
        assert f.interrupted() == [(node, STOPPED, retried)]
        assert INTERRUPTED_MSG in second.output, second.output
        assert retried not in ran and read(counter) == "x\n"


# ---------------------------------------------------------------- the void rule's window

def test_queue_edited_between_a_crash_and_the_restart(tmp_path, run_pegasus, run_in_process):
    """Crash after journaling a take, before rewriting the queue; then the user adds
    an entry (as they may at any time) before restarting: the take never happened,
    so the job must still run exactly once."""
    f = Folder(tmp_path / "run", "- localhost\n", str(tmp_path), run_pegasus,
               run_again=run_in_process)
    ids = list(f.write_queue(3))
    assert f.run(fault="taken-journaled").returncode == faults.EXIT_STATUS
    extra = "j99-" + uuid.uuid4().hex[:8]
    f.ids.append(extra)
    text = read(f.file("queue.yaml")) + "- 'echo %s >> %s'\n" % (extra, f.marker)
    tmp = f.file("queue.yaml.tmp")
    with open(tmp, "w") as out:
        out.write(text)
    os.replace(tmp, f.file("queue.yaml"))  # an editor's atomic save
    second = f.run()
    assert second.returncode == 0, second.output
    assert f.ran() == collections.Counter(ids + [extra]), (
        "after the edit the void take was taken for real: %s" % second.output)


# ---------------------------------------------------------------- SIGKILL at random instants

SEED = 20261125
CRASHES = 5
JOBS = 40


@pytest.mark.slow
@pytest.mark.parametrize("where", [CLUSTER, "local", "local-slots"])
def test_random_sigkill_during_a_run(where, request, tmp_path):
    """kill -9 Pegasus at random instants, restart, and check the invariants each time.

    After every crash the files must parse, nothing may have run twice and every
    id must be somewhere (a dead run's journal counts); after every other crash
    the test recovers the dead run itself, as the next start would, and checks
    that every id is in exactly one place; the other times the restarted
    Pegasus recovers. The crashed runs are daemons (``-d``), so every delay ends in a real kill
    whether or not the queue is empty by then; the last run is not, and must
    finish the queue. On the cluster, 2 nodes x 2 slots: the killed run's
    remote jobs are stopped by the wrapper's watchdog when its connections
    close. On localhost, 4 slots: local jobs outlive the killed run (they run
    in their own session), which changes nothing to the invariants.
    """
    if where == "cluster":
        lc = request.getfixturevalue("lc")
        f = Folder(tmp_path / "run", "- hostname: [node-1, node-2]\n  slot: [a, b]\n",
                   lc.scratch, None, lc.ssh_config)
        command = [sys.executable, "-m", "pegasus", "q", "--ssh-config", lc.ssh_config]
    elif where == "local":
        f = Folder(tmp_path / "run", "- hostname: localhost\n  slot: [a, b, c, d]\n",
                   str(tmp_path), None)
        command = [sys.executable, "-m", "pegasus", "q"]
    else:  # GPU slots: jobs of 1, 2 and 4 slots on a 4-slot host
        f = Folder(tmp_path / "run", "- hostname: localhost\n  slots: 4\n",
                   str(tmp_path), None)
        command = [sys.executable, "-m", "pegasus", "q"]
    f.write_queue(JOBS, sleep="0.2", slots=(1, 2, 1, 4) if where == "local-slots" else ())
    rng = random.Random(SEED)
    env = dict(os.environ, NO_COLOR="1")
    env.pop("PEGASUS_FAULT", None)
    history = []
    for crash in range(1, CRASHES + 1):
        delay = rng.uniform(0.3, 1.6)
        with open(os.path.join(str(tmp_path), "run-%d.out" % crash), "w") as out:
            proc = subprocess.Popen(command + ["-d"], cwd=f.path, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
            status = proc.wait(timeout=30)
        log = read(out.name)
        assert status == -signal.SIGKILL, "run %d ended by itself (%s):\n%s" % (
            crash, status, log)
        state = "crash %d after %.3f s; output:\n%s" % (crash, delay, log[-3000:])
        f.check_unrecovered(state)
        if crash % 2 == 0:
            # The recovery the next `pegasus q` does first, then every invariant.
            records.recover(QueueFile(f.file("queue.yaml")))
            assert f.journals() == [], state
            ran, interrupted = f.check(state)
            history.append((len(ran), len(interrupted), sum(f.queue().values())))
        # else the next run recovers (and may itself be killed while it does)

    done = subprocess.run(command, cwd=f.path, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    ran, interrupted = f.check("after the final run; history %s" % history)
    assert f.queue() == collections.Counter()
    assert f.journals() == []
    assert set(ran) | set(interrupted) == set(f.ids)
    assert all(ran[i] == 1 for i in f.ids if i not in interrupted)
    assert len(interrupted) <= 4 * CRASHES  # at most one job per sub-node per crash


# ---------------------------------------------------------------- the long version runs

@pytest.mark.slow
def test_crash_soak_smoke(lc):
    """benchmarks/crash_soak.py (the 100-crash version) runs and reports no loss."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks", "crash_soak.py")
    res = subprocess.run([sys.executable, script, "--crashes", "4", "--jobs", "12"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in res.stdout.splitlines()
                if re.search(r"\S\s{2,}\S", line))
    assert int(rows["crashes survived (SIGKILL)"].split()[0]) >= 1, res.stdout
    assert rows["jobs lost"] == "0" and rows["jobs run twice"] == "0", res.stdout
    assert "jobs interrupted (outcome unknown)" in rows, res.stdout
