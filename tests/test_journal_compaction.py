"""Journal compaction: a long run keeps a small journal, and a crash at any
instant of a compaction loses no job and reports none twice.

A journal keeps in memory the lines of its live tickets (taken, not yet
settled everywhere nor put back). Past its limit ``compact_if_large`` writes
them alone to ``.queue.yaml.jcompact-<random>`` (locked from its creation,
and not a journal name, so never an orphan), fsyncs it and renames it over
the journal. The tests drive the Journal API directly, no sshd:

- random runs against a model of what recovery must find, after every step;
- a real crash (a child process, ``PEGASUS_FAULT``, ``os._exit``) at each
  compaction step, then recovery, twice;
- recoverers running while a live Pegasus compacts, at each step and in the
  two races a compaction has with them (the new file removed before it is
  locked; the old file locked after the compaction let it go);
- left-over ``.jcompact-`` files: removed by recovery when nobody locks them;
- the order of the system calls that makes it crash-safe;
- 100,000 jobs on a tmpfs with the default limit (marked slow).
"""

import collections
import fcntl
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from pegasus import faults
from pegasus import journal as journals
from pegasus.errors import PegasusError
from pegasus.journal import DEFAULT_LIMIT, LIMIT_VARIABLE, Journal, read_orphans
from pegasus import records
from pegasus.queuefile import QueueFile
from pegasus.records import Records
from pegasus.yamltree import read_all

GONE = ".queue.yaml.partial-gone"  # a queue rewrite that was renamed long ago
SMALL = 2048  # bytes: compactions every few dozen jobs


# ---------------------------------------------------------------- helpers

def new_journal(folder, monkeypatch, limit=SMALL):
    monkeypatch.setenv(LIMIT_VARIABLE, str(limit))
    return Journal.create(str(folder / "queue.yaml"))


def entry(n):
    return {"command": "run-job --number %d --output /scratch/results/%d.out" % (n, n)}


def journal_files(folder):
    return sorted(p.name for p in folder.iterdir() if ".journal-" in p.name)


def compaction_files(folder):
    return sorted(p.name for p in folder.iterdir() if ".jcompact-" in p.name)


def found(orphan):
    return ([(t, e) for t, e in orphan.unlaunched],
            [(t, e, n) for t, e, n in orphan.interrupted])


def recovered_copy(journal, scratch):
    """What recovery would find if this process died now: the file's bytes as
    an orphan journal in an empty folder (a crash keeps exactly those)."""
    shutil.rmtree(str(scratch), ignore_errors=True)
    scratch.mkdir()
    with open(journal.path, "rb") as f:
        (scratch / ".queue.yaml.journal-000000000000").write_bytes(f.read())
    orphans = read_orphans(str(scratch / "queue.yaml"), set())
    for orphan in orphans:
        os.close(orphan.journal.fd)
    assert len(orphans) == 1, orphans
    return found(orphans[0])


def die(journal):
    """A crash: the file stays as it is, its lock goes."""
    os.close(journal.fd)


class Model:
    """What recovery must find: each live ticket's entry and the sub-nodes it runs on."""

    def __init__(self):
        self.entries = collections.OrderedDict()  # live tickets in taken order
        self.running = {}  # ticket -> [node]
        self.launched = set()

    def take(self, ticket, job_entry, nodes):
        self.entries[ticket] = job_entry
        self.running[ticket] = list(nodes)
        self.launched.update([ticket] if nodes else [])

    def launch(self, ticket, node):
        self.running[ticket].append(node)
        self.launched.add(ticket)

    def node_done(self, ticket, node):
        self.running[ticket].remove(node)

    def end(self, ticket):
        del self.entries[ticket]
        del self.running[ticket]

    def expected(self):
        return ([(t, e) for t, e in self.entries.items() if t not in self.launched],
                [(t, e, n) for t, e in self.entries.items() for n in self.running[t]])


# ---------------------------------------------------------------- (a) random runs

class Driver:
    """Random protocol-abiding calls on a journal, mirrored in a Model."""

    NODES = ["[n1]", "[n2]", "[n3]"]

    def __init__(self, journal, rng):
        self.journal, self.rng, self.model, self.count = journal, rng, Model(), 0
        self.last = {}  # ticket -> settled by its finish/lost (queue-mode style)

    def step(self):
        rng, model = self.rng, self.model
        live = list(model.entries)
        choices = ["take"] * 3 if len(live) < 10 else []  # jobs in flight: a few
        if any(len(model.running[t]) < len(self.NODES) and t not in self.last for t in live):
            choices.append("launch")
        if any(model.running[t] for t in live):
            choices += ["finish"] * 4
        if any(not model.running[t] and t in model.launched for t in live):
            choices.append("settle")
        if live:
            choices.append("put_back")
        getattr(self, rng.choice(choices))()

    def take(self):
        launched = self.rng.random() < 0.6  # queue mode; else broadcast (launched later)
        items = []
        for _ in range(self.rng.randint(1, 3)):
            self.count += 1
            ticket = self.journal.new_ticket()
            node = self.rng.choice(self.NODES) if launched else "broadcast to 3 sub-nodes"
            items.append((ticket, entry(self.count), node))
            self.model.take(ticket, entry(self.count), [node] if launched else [])
            if launched:
                self.last[ticket] = True
        self.journal.taken(items, GONE, launched=launched)

    def launch(self):
        ticket = self.rng.choice([t for t in self.model.entries
                                  if len(self.model.running[t]) < len(self.NODES)
                                  and t not in self.last])
        node = self.rng.choice([n for n in self.NODES if n not in self.model.running[ticket]])
        self.journal.launched(ticket, node)
        self.model.launch(ticket, node)

    def finish(self):
        ticket = self.rng.choice([t for t in self.model.entries if self.model.running[t]])
        node = self.rng.choice(self.model.running[ticket])
        last = self.last.get(ticket, False)
        if self.rng.random() < 0.8:
            self.journal.finished(ticket, node, self.rng.randint(0, 3), last=last)
        else:
            self.journal.lost(ticket, node, "connection lost", last=last)
        self.model.node_done(ticket, node)
        if last:
            self.model.end(ticket)

    def settle(self):
        ticket = self.rng.choice([t for t in self.model.entries
                                  if not self.model.running[t] and t in self.model.launched])
        self.journal.settled(ticket)
        self.model.end(ticket)

    def put_back(self):
        live = list(self.model.entries)
        tickets = self.rng.sample(live, self.rng.randint(1, min(2, len(live))))
        self.journal.put_back(tickets, ".queue.yaml.partial-%d" % self.count)
        for ticket in tickets:
            self.model.end(ticket)


@pytest.fixture
def tmpfs_path(tmp_path):
    """A folder on a tmpfs if there is one, else tmp_path: the random runs' fsyncs,
    unlinks and rmdirs (a journal and a recovered copy at each of 1,500 steps) are
    the disk's cost, not the journal's: 8 of a run's 9 s on our CI disk."""
    if not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK):
        yield tmp_path
        return
    folder = tempfile.mkdtemp(prefix="pegasus-journal-", dir="/dev/shm")
    try:
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_runs_stay_small_and_a_crash_anywhere_finds_exactly_the_live_jobs(
        tmpfs_path, monkeypatch, seed):
    folder = tmpfs_path / "run"
    folder.mkdir()
    journal = new_journal(folder, monkeypatch)
    driver = Driver(journal, random.Random(seed))
    compactions = peak = written = max_live = max_grew = 0
    try:
        for step in range(1500):
            before = journal.size
            driver.step()
            grew = journal.size - before  # this step's records
            compactions += journal.compact_if_large()
            where = "seed %d, step %d" % (seed, step)
            assert journal.size == os.fstat(journal.fd).st_size, where
            live = len(journal._live_lines())
            assert journal.size <= max(SMALL, 2 * live), where
            assert recovered_copy(journal, tmpfs_path / "copy") == driver.model.expected(), where
            assert compaction_files(folder) == [], where
            assert len(journal_files(folder)) == 1, where
            peak, written = max(peak, before + grew), written + grew
            max_live, max_grew = max(max_live, live), max(max_grew, grew)
    finally:
        die(journal)
    assert compactions >= 20 and driver.count > 500, (compactions, driver.count)
    assert peak <= max(SMALL, 2 * max_live) + max_grew
    assert written > 20 * peak, (written, peak)


def test_a_compacted_journal_holds_the_live_tickets_lines_and_nothing_else(tmp_path,
                                                                        monkeypatch):
    journal = new_journal(tmp_path, monkeypatch, limit=1)
    unlaunched, broadcast, queued = (journal.new_ticket() for _ in range(3))
    journal.taken([(unlaunched, entry(1), "broadcast to 2 sub-nodes")], GONE)
    journal.taken([(broadcast, entry(2), "broadcast to 2 sub-nodes")], GONE)
    journal.launched(broadcast, "[n1]")
    journal.launched(broadcast, "[n2]")
    journal.finished(broadcast, "[n1]", 0, last=False)
    for n in range(3, 30):
        done = journal.new_ticket()
        journal.taken([(done, entry(n), "[n3]")], GONE, launched=True)
        journal.finished(done, "[n3]", 0)
    journal.taken([(queued, entry(30), "[n3]")], GONE, launched=True)
    with open(journal.path, "rb") as f:
        before = f.read().splitlines(True)
    assert journal.compact_if_large()
    with open(journal.path, "rb") as f:
        after = f.read().splitlines(True)
    mine = [line for line in before
            if json.loads(line)["ticket"] in (unlaunched, broadcast, queued)]
    assert after == mine  # the very bytes, in their order
    assert journal.size == len(b"".join(after))
    assert not journal.compact_if_large()  # under the limit's twice-the-live rule now
    die(journal)
    (orphan,) = read_orphans(str(tmp_path / "queue.yaml"), set())
    assert found(orphan) == ([(unlaunched, entry(1))],
                             [(broadcast, entry(2), "[n2]"), (queued, entry(30), "[n3]")])
    orphan.journal.remove()


def test_records_never_compact_by_themselves(tmp_path, monkeypatch):
    """Only compact_if_large compacts: a record may be written between a queue
    rewrite's temporary file and its rename (the void rule's window)."""
    journal = new_journal(tmp_path, monkeypatch, limit=100)
    for n in range(20):
        ticket = journal.new_ticket()
        journal.taken([(ticket, entry(n), "[n1]")], GONE, launched=True)
        journal.finished(ticket, "[n1]", 0)
    assert os.path.getsize(journal.path) == journal.size > 20 * 100
    assert journal.compact_if_large()
    assert os.path.getsize(journal.path) == journal.size == 0
    journal.close()
    assert journal_files(tmp_path) == []


def test_live_lines_past_the_limit_do_not_compact_at_every_call(tmp_path, monkeypatch):
    """Many jobs in flight: compacting when the file is only live lines would
    rewrite it whole for every job; it waits until half of it is dead."""
    journal = new_journal(tmp_path, monkeypatch, limit=100)
    for n in range(50):
        journal.taken([(journal.new_ticket(), entry(n), "[n1]")], GONE, launched=True)
    compactions = 0
    for n in range(1000):
        ticket = journal.new_ticket()
        journal.taken([(ticket, entry(n), "[n2]")], GONE, launched=True)
        journal.finished(ticket, "[n2]", 0)
        compactions += journal.compact_if_large()
    assert 10 <= compactions <= 100, compactions
    assert len(journal.live_tickets) == 50
    die(journal)


# ---------------------------------------------------------------- settling tickets

def test_a_broadcast_ticket_lives_until_settled(tmp_path, monkeypatch):
    journal = new_journal(tmp_path, monkeypatch, limit=1)
    ticket = journal.new_ticket()
    journal.taken([(ticket, entry(1), "broadcast to 2 sub-nodes")], GONE)
    journal.launched(ticket, "[n1]")
    journal.launched(ticket, "[n2]")
    journal.finished(ticket, "[n1]", 0, last=False)
    journal.lost(ticket, "[n2]", "connection lost", last=False)
    journal.compact_if_large()
    assert journal.live_tickets == (ticket,)
    assert recovered_copy(journal, tmp_path / "copy") == ([], [])  # but nothing to do
    journal.settled(ticket)
    assert journal.live_tickets == ()
    journal.close()
    assert journal_files(tmp_path) == []


def test_close_keeps_the_journal_of_an_unsettled_ticket(tmp_path, monkeypatch):
    journal = new_journal(tmp_path, monkeypatch)
    ticket = journal.new_ticket()
    journal.taken([(ticket, entry(1), "broadcast to 1 sub-node")], GONE)
    journal.launched(ticket, "[n1]")
    journal.finished(ticket, "[n1]", 0, last=False)
    journal.close()
    assert len(journal_files(tmp_path)) == 1


def test_a_ticket_still_running_somewhere_is_not_settled(tmp_path, monkeypatch):
    """finish with last=True (the default) or settled() while another sub-node
    still runs it: it stays live, so a compaction keeps it."""
    journal, first = busy_journal(tmp_path, monkeypatch)
    journal.finished(first, "[n1]", 0)
    ticket = journal.new_ticket()
    journal.taken([(ticket, entry(1), "broadcast to 2 sub-nodes")], GONE)
    journal.launched(ticket, "[n1]")
    journal.launched(ticket, "[n2]")
    journal.finished(ticket, "[n1]", 0)
    journal.settled(ticket)
    assert journal.compact_if_large()
    assert recovered_copy(journal, tmp_path / "copy") == ([], [(ticket, entry(1), "[n2]")])
    journal.finished(ticket, "[n2]", 1)
    assert journal.live_tickets == ()
    journal.close()
    assert journal_files(tmp_path) == []


def test_a_put_back_whose_rename_failed_keeps_its_jobs(tmp_path, monkeypatch):
    """The put-back is journaled, then the queue's rename fails: the job is
    out of the queue and the put-back is void. Neither a compaction nor
    close() may drop it; recovery puts it back."""
    path = tmp_path / "queue.yaml"
    path.write_text("- echo one\n- echo two\n")
    queue = QueueFile(str(path))
    journal = new_journal(tmp_path, monkeypatch, limit=1)
    for n in range(10):  # dead lines, for the compaction to drop
        ticket = journal.new_ticket()
        journal.taken([(ticket, entry(n), "[n1]")], GONE, launched=True)
        journal.finished(ticket, "[n1]", 0)
    (job,) = Records(queue, journal, broadcast=True).take(["broadcast to 1 sub-node"], lambda job: None).jobs
    real_replace = os.replace

    def fail(src, dst):
        raise OSError(28, "No space left on device", src)

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(PegasusError):
        Records(queue, journal).put_back([job])
    monkeypatch.setattr(os, "replace", real_replace)
    assert journal.compact_if_large()
    journal.close()
    assert len(journal_files(tmp_path)) == 1
    assert records.recover(QueueFile(str(path))) == (1, [])
    assert [i.value for i in read_all(path.read_text(), str(path))[1]] == [
        {"command": "echo one"}, "echo two"]


def test_a_put_back_that_was_renamed_ends_its_tickets(tmp_path, monkeypatch):
    path = tmp_path / "queue.yaml"
    path.write_text("- echo one\n- echo two\n")
    queue = QueueFile(str(path))
    journal = new_journal(tmp_path, monkeypatch, limit=1)
    jobs = Records(queue, journal).take(["[n1]", "[n2]"], lambda job: None).jobs
    Records(queue, journal).put_back(jobs)
    assert journal.compact_if_large()
    assert journal.size == 0
    journal.close()
    assert journal_files(tmp_path) == []


# ---------------------------------------------------------------- the limit

def test_the_limit_comes_from_the_environment_once(tmp_path, monkeypatch):
    monkeypatch.delenv(LIMIT_VARIABLE, raising=False)
    journal = Journal.create(str(tmp_path / "queue.yaml"))
    assert journal.limit == DEFAULT_LIMIT <= 512 * 1024
    monkeypatch.setenv(LIMIT_VARIABLE, "1234")
    assert journal.limit == DEFAULT_LIMIT
    journal.close()
    journal = Journal.create(str(tmp_path / "queue.yaml"))
    assert journal.limit == 1234
    journal.close()
    monkeypatch.setenv(LIMIT_VARIABLE, "1k")
    with pytest.raises(PegasusError, match=LIMIT_VARIABLE):
        Journal.create(str(tmp_path / "queue.yaml"))
    assert journal_files(tmp_path) == []


# ---------------------------------------------------------------- (b) a crash at each step

CHILD = r"""
import json, os, sys
from pegasus.journal import Journal
queue = sys.argv[1]
journal = Journal.create(queue)
def entry(n):
    return {"command": "run-job --number %d --output /scratch/results/%d.out" % (n, n)}
def say(unlaunched, interrupted):
    print(json.dumps([unlaunched, interrupted]), flush=True)
# live all along: a broadcast job taken, launched nowhere; one launched on 2
# sub-nodes, finished on one
waiting, split = journal.new_ticket(), journal.new_ticket()
journal.taken([(waiting, entry(0), "broadcast to 2 sub-nodes")], "gone")
journal.taken([(split, entry(1), "broadcast to 2 sub-nodes")], "gone")
journal.launched(split, "[b1]")
journal.launched(split, "[b2]")
journal.finished(split, "[b1]", 0, last=False)
flight = []
for n in range(2, 10000):
    ticket = journal.new_ticket()
    node = "[q%d]" % (n % 2)
    journal.taken([(ticket, entry(n), node)], "gone", launched=True)
    flight.append((ticket, entry(n), node))
    if len(flight) > 2:
        done, _, where = flight.pop(0)
        if n % 7:
            journal.finished(done, where, 0)
        else:
            journal.lost(done, where, "connection lost")
    say([[waiting, entry(0)]], [[split, entry(1), "[b2]"]] + [list(f) for f in flight])
    if journal.compact_if_large():
        print("compacted", flush=True)
        if os.environ.get("COMPACTIONS") == "1":
            break
os._exit(0)
"""


def crash_child(folder, step, limit=4096):
    env = dict(os.environ, PEGASUS_FAULT=step, **{LIMIT_VARIABLE: str(limit)})
    res = subprocess.run([sys.executable, "-c", CHILD, str(folder / "queue.yaml")],
                         env=env, capture_output=True, text=True, timeout=60)
    said = [line for line in res.stdout.splitlines() if line.startswith("[")]
    unlaunched, interrupted = json.loads(said[-1])
    return res, ([tuple(x) for x in unlaunched], [tuple(x) for x in interrupted])


@pytest.mark.parametrize("step", faults.COMPACT_STEPS)
def test_a_crash_at_each_compaction_step_loses_nothing_and_reports_nothing_twice(
        tmp_path, step):
    res, (unlaunched, interrupted) = crash_child(tmp_path, step)
    assert res.returncode == faults.EXIT_STATUS, res.stdout + res.stderr
    assert "compacted" not in res.stdout  # it died in its first compaction
    (journal,) = journal_files(tmp_path)
    size = os.path.getsize(str(tmp_path / journal))
    if step == "compact-renamed":
        assert compaction_files(tmp_path) == []
        assert size < 4096  # the compacted journal
    else:
        assert len(compaction_files(tmp_path)) == 1  # left for recovery to remove
        assert size > 4096  # the old journal, whole
    path = tmp_path / "queue.yaml"
    path.write_text("- echo later\n")
    queue = QueueFile(str(path))
    assert records.recover(queue) == (len(unlaunched), [(e, n, None) for _, e, n in interrupted])
    assert [i.value for i in read_all(path.read_text(), str(path))[1]] == [
        e for _, e in unlaunched] + ["echo later"]
    listed = yaml.safe_load((tmp_path / "interrupted.yaml").read_text())
    assert listed == [e for _, e, _ in interrupted]
    assert journal_files(tmp_path) == [] and compaction_files(tmp_path) == []
    assert records.recover(queue) == (0, [])  # nothing twice
    assert yaml.safe_load((tmp_path / "interrupted.yaml").read_text()) == listed


def test_a_crash_after_a_compaction_finds_the_same_as_before_it(tmp_path):
    """The control: one whole compaction, then the crash (no fault)."""
    env = dict(os.environ, COMPACTIONS="1", **{LIMIT_VARIABLE: "4096"})
    env.pop("PEGASUS_FAULT", None)
    res = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "queue.yaml")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "compacted" in res.stdout, res.stdout + res.stderr
    unlaunched, interrupted = json.loads(res.stdout.splitlines()[-2])
    (orphan,) = read_orphans(str(tmp_path / "queue.yaml"), set())
    assert found(orphan) == ([tuple(x) for x in unlaunched], [tuple(x) for x in interrupted])
    orphan.journal.remove()


# ---------------------------------------------------------------- recoverers meanwhile

def pause_at(monkeypatch, step, then):
    """Run ``then()`` when a compaction reaches ``step`` (as if it were paused there)."""
    real = faults.point

    def point(name):
        if name == step:
            then()
        real(name)

    monkeypatch.setattr(faults, "point", point)


def busy_journal(folder, monkeypatch):
    journal = new_journal(folder, monkeypatch, limit=1)
    keep = journal.new_ticket()
    journal.taken([(keep, entry(0), "[n1]")], GONE, launched=True)
    for n in range(1, 20):
        ticket = journal.new_ticket()
        journal.taken([(ticket, entry(n), "[n2]")], GONE, launched=True)
        journal.finished(ticket, "[n2]", 0)
    return journal, keep


@pytest.mark.parametrize("step", faults.COMPACT_STEPS)
def test_a_recovery_while_a_live_pegasus_compacts_touches_nothing(tmp_path, monkeypatch,
                                                                  step):
    journal, keep = busy_journal(tmp_path, monkeypatch)
    seen = []

    def recover():
        seen.append((compaction_files(tmp_path),
                     records.recover(QueueFile(str(tmp_path / "queue.yaml"))),
                     compaction_files(tmp_path), journal_files(tmp_path)))

    pause_at(monkeypatch, step, recover)
    assert journal.compact_if_large()
    ((before, result, after, journals_seen),) = seen
    assert result == (0, [])
    assert after == before and len(before) == (0 if step == "compact-renamed" else 1)
    assert journals_seen == [os.path.basename(journal.path)]
    journal.finished(keep, "[n1]", 0)  # and the journal goes on
    journal.close()
    assert journal_files(tmp_path) == [] and compaction_files(tmp_path) == []


def test_a_recovery_that_removes_the_new_file_before_it_is_locked(tmp_path, monkeypatch):
    """Between the new file's creation and its lock, a recovery may take it for a
    dead compaction's and remove it: the compaction then gives up, the journal
    is whole, and the next one succeeds."""
    journal, keep = busy_journal(tmp_path, monkeypatch)
    real = journals._create_locked
    before = open(journal.path, "rb").read()

    def slow_lock(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o666)
        assert records.recover(QueueFile(str(tmp_path / "queue.yaml"))) == (0, [])
        assert compaction_files(tmp_path) == []  # removed: nobody locked it
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd

    monkeypatch.setattr(journals, "_create_locked", slow_lock)
    assert not journal.compact_if_large()
    monkeypatch.setattr(journals, "_create_locked", real)
    assert open(journal.path, "rb").read() == before
    assert journal.size == len(before)
    assert journal.compact_if_large()
    assert recovered_copy(journal, tmp_path / "copy") == ([], [(keep, entry(0), "[n1]")])
    die(journal)


def test_a_recovery_that_locks_the_old_file_after_a_compaction_sees_no_orphan(
        tmp_path, monkeypatch):
    """A recovery opens the journal, the live Pegasus compacts and closes the
    old file (its lock goes), then the recovery locks what it opened: that
    lock proves nothing, the file at the path is locked by its live owner."""
    journal, keep = busy_journal(tmp_path, monkeypatch)
    real_flock = fcntl.flock
    compacted = []

    def flock(fd, op):
        if not compacted and fd != journal.fd:
            compacted.append("busy")
            compacted[0] = journal.compact_if_large()  # between its open and its flock
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    assert read_orphans(str(tmp_path / "queue.yaml"), set()) == []
    monkeypatch.setattr(fcntl, "flock", real_flock)
    assert compacted == [True]
    assert journal_files(tmp_path) == [os.path.basename(journal.path)]
    journal.finished(keep, "[n1]", 0)
    journal.close()
    assert journal_files(tmp_path) == []


# ---------------------------------------------------------------- (c) left-over new files

def left_over(folder, suffix="0123456789ab", queue="queue.yaml"):
    path = folder / (".%s.jcompact-%s" % (queue, suffix))
    path.write_text('{"ev":"taken","ticket":"t1","entry":"x","target":"[n]"}\n')
    return path


def test_recovery_removes_a_left_over_compaction_file_nobody_locks(tmp_path):
    path = left_over(tmp_path)
    assert read_orphans(str(tmp_path / "queue.yaml"), set()) == []  # never an orphan
    assert not path.exists()


def test_recovery_keeps_a_compaction_file_that_is_locked(tmp_path):
    path = left_over(tmp_path)
    other = left_over(tmp_path, queue="other.yaml")
    fd = os.open(str(path), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert records.recover(QueueFile(str(tmp_path / "queue.yaml"))) == (0, [])
        assert path.exists()
    finally:
        os.close(fd)
    assert other.exists()  # another queue's
    records.recover(QueueFile(str(tmp_path / "queue.yaml")))
    assert not path.exists() and other.exists()


def test_recovery_keeps_the_compaction_file_of_a_live_process(tmp_path):
    path = left_over(tmp_path)
    owner = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys\n"
         "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\n"
         "sys.stdin.read()\n", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline() == "locked\n"
        records.recover(QueueFile(str(tmp_path / "queue.yaml")))
        assert path.exists()
    finally:
        owner.stdin.close()
        owner.wait(timeout=30)
    records.recover(QueueFile(str(tmp_path / "queue.yaml")))
    assert not path.exists()


def test_recovery_does_not_follow_a_compaction_file_symlink(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    link = tmp_path / ".queue.yaml.jcompact-0123456789ab"
    link.symlink_to(target)
    read_orphans(str(tmp_path / "queue.yaml"), set())
    assert target.read_text() == "keep me\n"


# ---------------------------------------------------------------- the order of the calls

def test_compaction_locks_writes_and_syncs_the_new_file_before_the_rename(tmp_path,
                                                                         monkeypatch):
    journal, _ = busy_journal(tmp_path, monkeypatch)
    old_fd, names, calls = journal.fd, {}, []
    real = {name: getattr(os, name) for name in ("open", "write", "fsync", "replace", "close")}
    real_flock = fcntl.flock

    def name_of(fd):
        return "old" if fd == old_fd else names.get(fd, "?")

    def opened(path, flags, *args):
        fd = real["open"](path, flags, *args)
        kind = "new" if ".jcompact-" in str(path) else "folder"
        names[fd] = kind
        calls.append(("open", kind, bool(flags & os.O_EXCL)))
        return fd

    def record(name):
        def call(fd, *args):
            calls.append((name, name_of(fd)))
            return real[name](fd, *args)
        return call

    def replaced(src, dst):
        calls.append(("replace", ".jcompact-" in src, dst == journal.path))
        return real["replace"](src, dst)

    def flocked(fd, op):
        calls.append(("flock", name_of(fd), op == fcntl.LOCK_EX | fcntl.LOCK_NB))
        return real_flock(fd, op)

    for name in ("write", "fsync", "close"):
        monkeypatch.setattr(os, name, record(name))
    monkeypatch.setattr(os, "open", opened)
    monkeypatch.setattr(os, "replace", replaced)
    monkeypatch.setattr(fcntl, "flock", flocked)
    assert journal.compact_if_large()
    monkeypatch.undo()
    assert [c for c in calls if c[:2] != ("close", "folder")] == [
        ("open", "new", True), ("flock", "new", True), ("write", "new"), ("fsync", "new"),
        ("replace", True, True), ("open", "folder", False), ("fsync", "folder"),
        ("close", "old")]
    die(journal)


# ---------------------------------------------------------------- (d) 100,000 jobs

@pytest.mark.slow
def test_a_hundred_thousand_jobs_keep_the_journal_under_one_megabyte(monkeypatch):
    """Queue mode's calls for 100,000 jobs, 8 in flight, with the default limit, on
    a tmpfs (the fsyncs are the disk's cost, not the journal's)."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("needs /dev/shm (a tmpfs)")
    folder = tempfile.mkdtemp(prefix="pegasus-journal-", dir="/dev/shm")
    monkeypatch.delenv(LIMIT_VARIABLE, raising=False)
    try:
        journal = Journal.create(os.path.join(folder, "queue.yaml"))
        peak, compactions, flight = 0, 0, collections.deque()
        start = time.perf_counter()
        for n in range(100000):
            ticket = journal.new_ticket()
            node = "[node-%d (gpu=%d)]" % (n % 4, n % 2)
            journal.taken([(ticket, entry(n), node)], ".queue.yaml.partial-%012x" % n,
                          launched=True)
            flight.append((ticket, node))
            if len(flight) > 8:
                done, where = flight.popleft()
                journal.finished(done, where, n % 3)
            peak = max(peak, journal.size)
            compactions += journal.compact_if_large()
            if n % 997 == 0:
                assert os.fstat(journal.fd).st_size == journal.size
        elapsed = time.perf_counter() - start
        print("\n100,000 jobs: peak journal %d bytes, %d compactions, %.1f s, final %d bytes"
              % (peak, compactions, elapsed, journal.size))
        assert peak <= 1000000
        assert compactions >= 100
        die(journal)
        (orphan,) = read_orphans(os.path.join(folder, "queue.yaml"), set())
        assert [(t, n) for t, _, n in orphan.interrupted] == list(flight)
        orphan.journal.remove()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
