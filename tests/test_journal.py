"""The job journal's recovery logic, on hand-written journal files.

``journal.read_orphans`` finds the journals of dead Pegasus processes and
says, for each, which jobs were taken but never launched (they go back to
the queue) and which were launched and never settled (outcome unknown: they
go to interrupted.yaml). ``QueueFile.recover`` and ``QueueFile.requeue`` act
on that; the round trips at the end run them on real files in tmp_path.

A journal is "dead" when nobody holds an flock on it; the tests make one by
writing the file by hand (or by closing a real ``Journal`` without settling
its jobs, which keeps the file, as a crash would).
"""

import fcntl
import json
import os
import subprocess
import sys

import pytest
import yaml

from pegasus import journal as journals
from pegasus.journal import Journal, read_orphans
from pegasus.queuefile import STOPPED, QueueFile
from pegasus.yamltree import read_all

SIG_BEFORE = [1700000000000000000, 42, 1001]  # the queue file's stat before a rewrite
SIG_NOW = (1700000000500000000, 30, 1002)  # ... and as it is at recovery
ENTRY_A = {"command": "echo a"}
ENTRY_B = {"command": "echo {{ x }}", "x": "2"}
ENTRY_C = {"command": "echo c"}


def ok(job):
    return None


# ---------------------------------------------------------------- helpers

def journal_path(tmp_path, suffix="0123456789ab", queue="queue.yaml"):
    return str(tmp_path / (".%s.journal-%s" % (queue, suffix)))


def write_journal(tmp_path, records, suffix="0123456789ab", tail="", queue="queue.yaml"):
    """A dead Pegasus's journal: one JSON object a line, then ``tail`` (torn)."""
    path = journal_path(tmp_path, suffix, queue)
    with open(path, "w") as f:
        for rec in records:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        f.write(tail)
    return path


def taken(ticket, entry, pre=SIG_BEFORE, target="[n1]"):
    return {"ev": "taken", "ticket": ticket, "entry": entry, "target": target, "pre": pre}


def launched(ticket, node="[n1]"):
    return {"ev": "launched", "ticket": ticket, "node": node}


def finished(ticket, node="[n1]", status=0):
    return {"ev": "finished", "ticket": ticket, "node": node, "exit": status}


def lost(ticket, node="[n1]", reason="connection lost"):
    return {"ev": "lost", "ticket": ticket, "node": node, "reason": reason}


def put_back(tickets, pre):
    return {"ev": "put-back", "tickets": list(tickets), "pre": pre}


def orphans_of(tmp_path, signature=SIG_NOW, queue="queue.yaml"):
    """read_orphans, then release them (the files stay: no discard)."""
    found = read_orphans(str(tmp_path / queue), signature)
    for orphan in found:
        os.close(orphan.fd)
    return found


def only(tmp_path, signature=SIG_NOW):
    found = orphans_of(tmp_path, signature)
    assert len(found) == 1, found
    return found[0]


def entries(path):
    return [item.value for item in read_all(open(str(path)).read(), str(path))[1]]


def die(journal):
    """What a crash leaves: the file, unlocked (its tickets are still open)."""
    assert journal.open_tickets, "a journal with every job settled is removed on close"
    journal.close()
    assert os.path.exists(journal.path)


# ---------------------------------------------------------------- read_orphans / _resolve

def test_taken_not_launched_is_unlaunched(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A)])
    orphan = only(tmp_path)
    assert orphan.unlaunched == [ENTRY_A]
    assert orphan.interrupted == []


def test_launched_not_finished_is_interrupted_with_its_node(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A, target="[node-2 (gpu=1)]"),
                             launched("t1", "[node-2 (gpu=1)]")])
    orphan = only(tmp_path)
    assert orphan.unlaunched == []
    assert orphan.interrupted == [(ENTRY_A, "[node-2 (gpu=1)]")]


@pytest.mark.parametrize("end", [finished("t1", status=0), finished("t1", status=137),
                                 lost("t1")], ids=["exit-0", "exit-137", "lost"])
def test_finished_or_lost_leaves_nothing(tmp_path, end):
    write_journal(tmp_path, [taken("t1", ENTRY_A), launched("t1"), end])
    orphan = only(tmp_path)
    assert (orphan.unlaunched, orphan.interrupted) == ([], [])


def test_put_back_leaves_nothing(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A), taken("t2", ENTRY_B),
                             put_back(["t1", "t2"], [1, 2, 3])])
    orphan = only(tmp_path)
    assert (orphan.unlaunched, orphan.interrupted) == ([], [])


def test_a_mixed_journal_is_settled_job_by_job(tmp_path):
    write_journal(tmp_path, [
        taken("t1", ENTRY_A, target="[n1]"), taken("t2", ENTRY_B, target="[n2]"),
        taken("t3", ENTRY_C, target="[n3]"),
        launched("t1", "[n1]"), launched("t2", "[n2]"),
        finished("t1", "[n1]", 1),
    ])
    orphan = only(tmp_path)
    assert orphan.unlaunched == [ENTRY_C]
    assert orphan.interrupted == [(ENTRY_B, "[n2]")]


def test_unlaunched_jobs_keep_their_taken_order(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A), taken("t2", ENTRY_B),
                             taken("t3", ENTRY_C, pre=[5, 5, 5])])
    assert only(tmp_path).unlaunched == [ENTRY_A, ENTRY_B, ENTRY_C]


# -- the void rule: a rewrite journaled but never done

def test_void_rule_last_take_never_happened(tmp_path):
    """The queue still has the signature the last take saw: it was not rewritten."""
    write_journal(tmp_path, [taken("t1", ENTRY_A, pre=list(SIG_NOW))])
    orphan = only(tmp_path, SIG_NOW)
    assert (orphan.unlaunched, orphan.interrupted) == ([], [])


def test_void_rule_only_when_the_signature_matches(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A, pre=list(SIG_NOW))])
    other = (SIG_NOW[0] + 1,) + SIG_NOW[1:]
    assert only(tmp_path, other).unlaunched == [ENTRY_A]


def test_void_rule_covers_every_job_of_the_last_pop_and_nothing_before(tmp_path):
    write_journal(tmp_path, [
        taken("t1", ENTRY_A, pre=SIG_BEFORE), launched("t1"),  # earlier pop, really done
        taken("t2", ENTRY_B, pre=list(SIG_NOW)), taken("t3", ENTRY_C, pre=list(SIG_NOW)),
    ])
    orphan = only(tmp_path, SIG_NOW)
    assert orphan.unlaunched == []
    assert orphan.interrupted == [(ENTRY_A, "[n1]")]


def test_void_rule_looks_only_at_the_last_rewrite(tmp_path):
    """An older take whose `pre` happens to match is real: a later rewrite followed it."""
    write_journal(tmp_path, [
        taken("t1", ENTRY_A, pre=list(SIG_NOW)),
        taken("t2", ENTRY_B, pre=[9, 9, 9]),
    ])
    assert only(tmp_path, SIG_NOW).unlaunched == [ENTRY_A, ENTRY_B]


def test_void_put_back_means_the_jobs_are_still_out_of_the_queue(tmp_path):
    """put-back journaled, queue not rewritten: the jobs must still go back."""
    write_journal(tmp_path, [taken("t1", ENTRY_A, pre=SIG_BEFORE),
                             put_back(["t1"], list(SIG_NOW))])
    assert only(tmp_path, SIG_NOW).unlaunched == [ENTRY_A]


def test_missing_queue_file_never_voids(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A, pre=SIG_BEFORE)])
    assert only(tmp_path, None).unlaunched == [ENTRY_A]


# -- torn and damaged journals

def test_torn_last_line_is_ignored(tmp_path):
    record = json.dumps(finished("t1"), separators=(",", ":"))
    write_journal(tmp_path, [taken("t1", ENTRY_A), launched("t1")],
                  tail=record[:len(record) // 2])
    orphan = only(tmp_path)
    assert orphan.interrupted == [(ENTRY_A, "[n1]")]  # the half "finished" does not count


def test_torn_last_line_that_would_parse_is_still_ignored(tmp_path):
    """A complete-looking JSON object without its newline was still being written."""
    write_journal(tmp_path, [taken("t1", ENTRY_A), launched("t1")],
                  tail=json.dumps(finished("t1")))
    assert only(tmp_path).interrupted == [(ENTRY_A, "[n1]")]


def test_torn_multi_record_take_is_void(tmp_path):
    """A crash in the middle of writing one pop's records: the pop never happened."""
    second = json.dumps(taken("t2", ENTRY_B, pre=list(SIG_NOW)), separators=(",", ":"))
    write_journal(tmp_path, [taken("t1", ENTRY_A, pre=list(SIG_NOW))], tail=second[:20])
    orphan = only(tmp_path, SIG_NOW)
    assert (orphan.unlaunched, orphan.interrupted) == ([], [])


def test_empty_and_garbage_lines_do_not_stop_recovery(tmp_path):
    path = journal_path(tmp_path)
    with open(path, "w") as f:
        f.write(json.dumps(taken("t1", ENTRY_A)) + "\n")
        f.write("\x00\x00 not json\n\n")
        f.write(json.dumps(launched("t1")) + "\n")
    assert only(tmp_path).interrupted == [(ENTRY_A, "[n1]")]


def test_empty_journal_is_an_orphan_with_nothing(tmp_path):
    path = write_journal(tmp_path, [])
    orphan = only(tmp_path)
    assert (orphan.path, orphan.unlaunched, orphan.interrupted) == (path, [], [])


# -- whose journals

def test_a_journal_locked_by_another_fd_is_not_touched(tmp_path):
    path = write_journal(tmp_path, [taken("t1", ENTRY_A)])
    before = open(path, "rb").read()
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert read_orphans(str(tmp_path / "queue.yaml"), SIG_NOW) == []
    finally:
        os.close(fd)
    assert open(path, "rb").read() == before
    assert only(tmp_path).unlaunched == [ENTRY_A]  # its owner is gone now


def test_a_journal_whose_owner_process_is_alive_is_not_touched(tmp_path):
    path = write_journal(tmp_path, [taken("t1", ENTRY_A), launched("t1")])
    owner = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys\n"
         "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\n"
         "sys.stdin.read()\n", path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline() == "locked\n"
        queue = QueueFile(str(tmp_path / "queue.yaml"))
        (tmp_path / "queue.yaml").write_text("- echo z\n")
        assert queue.recover() == (0, [])
        assert os.path.exists(path)
        assert (tmp_path / "queue.yaml").read_text() == "- echo z\n"
        assert not (tmp_path / "interrupted.yaml").exists()
    finally:
        owner.stdin.close()
        owner.wait(timeout=30)
    assert queue.recover() == (0, [(ENTRY_A, "[n1]")])  # the owner died
    assert not os.path.exists(path)


def test_a_live_journal_is_not_an_orphan(tmp_path):
    journal = Journal.create(str(tmp_path / "queue.yaml"))
    try:
        journal.taken([(journal.new_ticket(), ENTRY_A, "[n1]")], SIG_BEFORE)
        assert read_orphans(str(tmp_path / "queue.yaml"), SIG_NOW) == []
    finally:
        os.close(journal.fd)


def test_journals_of_another_queue_file_are_not_read(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A)], queue="other.yaml")
    write_journal(tmp_path, [taken("t2", ENTRY_B)], queue="queue.yaml.bak")
    assert orphans_of(tmp_path) == []
    assert [o.unlaunched for o in orphans_of(tmp_path, queue="other.yaml")] == [[ENTRY_A]]


def test_queue_path_with_glob_characters(tmp_path):
    folder = tmp_path / "runs [1]*?"
    folder.mkdir()
    write_journal(folder, [taken("t1", ENTRY_A)])
    assert [o.unlaunched for o in orphans_of(folder)] == [[ENTRY_A]]


def test_several_orphans_are_all_found(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A)], suffix="aaaaaaaaaaaa")
    write_journal(tmp_path, [taken("t2", ENTRY_B), launched("t2", "[n2]")],
                  suffix="bbbbbbbbbbbb")
    found = orphans_of(tmp_path)
    assert [(o.unlaunched, o.interrupted) for o in found] == [
        ([ENTRY_A], []), ([], [(ENTRY_B, "[n2]")])]


def test_discard_removes_the_journal(tmp_path):
    path = write_journal(tmp_path, [taken("t1", ENTRY_A)])
    (orphan,) = read_orphans(str(tmp_path / "queue.yaml"), SIG_NOW)
    journals.discard(orphan)
    assert not os.path.exists(path)
    with pytest.raises(OSError):
        os.fstat(orphan.fd)  # closed


# -- broadcast: one ticket, several nodes

def test_broadcast_only_unfinished_nodes_are_interrupted(tmp_path):
    write_journal(tmp_path, [
        taken("t1", ENTRY_A, target="broadcast to 4 sub-nodes"),
        launched("t1", "[n1]"), launched("t1", "[n2]"), launched("t1", "[n3]"),
        launched("t1", "[n4]"),
        finished("t1", "[n1]", 0), lost("t1", "[n3]"), finished("t1", "[n4]", 2),
    ])
    orphan = only(tmp_path)
    assert orphan.unlaunched == []
    assert orphan.interrupted == [(ENTRY_A, "[n2]")]


def test_broadcast_finish_on_an_unlaunched_node_settles_nothing(tmp_path):
    write_journal(tmp_path, [
        taken("t1", ENTRY_A, target="broadcast to 2 sub-nodes"),
        launched("t1", "[n1]"), launched("t1", "[n2]"),
        finished("t1", "[n9]", 0),
    ])
    assert only(tmp_path).interrupted == [(ENTRY_A, "[n1]"), (ENTRY_A, "[n2]")]


def test_broadcast_all_finished_leaves_nothing(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A), launched("t1", "[n1]"),
                             launched("t1", "[n2]"), finished("t1", "[n2]"),
                             finished("t1", "[n1]")])
    orphan = only(tmp_path)
    assert (orphan.unlaunched, orphan.interrupted) == ([], [])


# ---------------------------------------------------------------- the Journal itself

def test_journal_records_are_json_lines_and_close_removes_a_settled_journal(tmp_path):
    journal = Journal.create(str(tmp_path / "queue.yaml"))
    assert os.path.basename(journal.path).startswith(".queue.yaml.journal-")
    ticket = journal.new_ticket()
    journal.taken([(ticket, ENTRY_A, "[n1]")], SIG_BEFORE)
    journal.launched(ticket, "[n1]")
    journal.finished(ticket, "[n1]", 3)
    lines = open(journal.path).read().splitlines()
    assert [json.loads(line)["ev"] for line in lines] == ["taken", "launched", "finished"]
    assert json.loads(lines[2])["exit"] == 3
    journal.close()
    assert not os.path.exists(journal.path)


def test_journal_with_an_open_job_survives_close(tmp_path):
    journal = Journal.create(str(tmp_path / "queue.yaml"))
    ticket = journal.new_ticket()
    journal.taken([(ticket, ENTRY_A, "[n1]")], SIG_BEFORE)
    journal.launched(ticket, "[n1]")
    die(journal)
    assert only(tmp_path).interrupted == [(ENTRY_A, "[n1]")]


def test_journal_entry_with_newlines_and_unicode_survives(tmp_path):
    entry = {"command": "printf 'a\\nb'\necho \"é\" $x", "x": "it's"}
    journal = Journal.create(str(tmp_path / "queue.yaml"))
    journal.taken([(journal.new_ticket(), entry, "[n1]")], SIG_BEFORE)
    die(journal)
    assert only(tmp_path).unlaunched == [entry]


# ---------------------------------------------------------------- QueueFile round trips

QUEUE = "# my queue\n- echo one  # first\n- echo two\n# trailing comment\n"


def make_queue(tmp_path, text=QUEUE):
    path = tmp_path / "queue.yaml"
    path.write_text(text)
    return QueueFile(str(path)), path


def journals_left(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if ".journal-" in p.name)


def test_recover_puts_an_unlaunched_job_back_at_the_head(tmp_path):
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    job = q.take(["[n1]"], ok, journal).jobs[0]
    assert path.read_text() == "# my queue\n- echo two\n# trailing comment\n"
    die(journal)
    assert QueueFile(str(path)).recover() == (1, [])
    assert entries(path) == [{"command": "echo one"}, "echo two"]
    assert path.read_text().endswith("- echo two\n# trailing comment\n")
    assert job.ticket is not None
    assert journals_left(tmp_path) == []
    assert not (tmp_path / "interrupted.yaml").exists()


def test_recover_puts_several_unlaunched_jobs_back_in_order(tmp_path):
    q, path = make_queue(tmp_path, "- a\n- command: b{{x}}\n  x: [1, 2, 3]\n- c\n")
    journal = Journal.create(str(path))
    taken_jobs = q.take(["[1]", "[2]", "[3]"], ok, journal).jobs
    assert [j.command for j in taken_jobs] == ["a", "b{{x}}", "b{{x}}"]
    die(journal)
    assert QueueFile(str(path)).recover() == (3, [])
    assert entries(path) == [{"command": "a"}, {"command": "b{{x}}", "x": "1"},
                             {"command": "b{{x}}", "x": "2"},
                             {"command": "b{{x}}", "x": "3"}, "c"]


def test_recover_records_an_interrupted_job_and_requeue_moves_it_back(tmp_path):
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    (job,) = q.take(["[node-2 (gpu=0)]"], ok, journal).jobs
    journal.launched(job.ticket, "[node-2 (gpu=0)]")
    die(journal)
    q2 = QueueFile(str(path))
    assert q2.recover() == (0, [({"command": "echo one"}, "[node-2 (gpu=0)]")])
    assert entries(path) == ["echo two"]
    text = (tmp_path / "interrupted.yaml").read_text()
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert len(comments) == 1
    assert comments[0].startswith("# interrupted ")
    assert comments[0].endswith(" for [node-2 (gpu=0)]: " + STOPPED)
    assert yaml.safe_load(text) == [{"command": "echo one"}]
    assert journals_left(tmp_path) == []
    assert q2.recover() == (0, [])  # settled once only
    assert yaml.safe_load((tmp_path / "interrupted.yaml").read_text()) == [
        {"command": "echo one"}]

    assert q2.requeue() == 1
    assert entries(path) == [{"command": "echo one"}, "echo two"]
    assert path.read_text().endswith("- echo two\n# trailing comment\n")
    assert yaml.safe_load((tmp_path / "interrupted.yaml").read_text()) is None
    assert q2.requeue() == 0
    assert entries(path) == [{"command": "echo one"}, "echo two"]
    # and it runs as the same job it was
    (again,) = q2.take(["[n1]"], ok).jobs
    assert (again.command, again.params) == (job.command, job.params)


def test_recover_nothing_for_a_finished_job(tmp_path):
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    (job,) = q.take(["[n1]"], ok, journal).jobs
    journal.launched(job.ticket, "[n1]")
    journal.finished(job.ticket, "[n1]", 0)
    os.close(journal.fd)  # died after the finish record, before close()
    before = path.read_bytes()
    assert QueueFile(str(path)).recover() == (0, [])
    assert path.read_bytes() == before
    assert journals_left(tmp_path) == []


def test_recover_void_take_leaves_the_queue_as_it_was(tmp_path):
    """Crash after the `taken` record, before the rewrite (faults: taken-journaled)."""
    q, path = make_queue(tmp_path)
    before = path.read_bytes()
    journal = Journal.create(str(path))
    journal.taken([(journal.new_ticket(), {"command": "echo one"}, "[n1]")], q.signature())
    die(journal)
    assert QueueFile(str(path)).recover() == (0, [])
    assert path.read_bytes() == before
    assert journals_left(tmp_path) == []


def test_recover_a_pop_that_mixes_every_state(tmp_path):
    q, path = make_queue(tmp_path, "- a\n- b\n- c\n- d\n")
    journal = Journal.create(str(path))
    ja, jb, jc = q.take(["[1]", "[2]", "[3]"], ok, journal).jobs
    journal.launched(ja.ticket, "[1]")
    journal.finished(ja.ticket, "[1]", 0)
    journal.launched(jb.ticket, "[2]")
    die(journal)
    assert QueueFile(str(path)).recover() == (1, [({"command": "b"}, "[2]")])
    assert entries(path) == [{"command": "c"}, "d"]


def test_recover_leaves_a_live_pegasus_alone(tmp_path):
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    (job,) = q.take(["[n1]"], ok, journal).jobs
    before = path.read_bytes()
    try:
        assert QueueFile(str(path)).recover() == (0, [])
        assert path.read_bytes() == before
        assert os.path.exists(journal.path)
    finally:
        die(journal)


def test_recover_after_a_put_back(tmp_path):
    """A job that could not be sent went back; then Pegasus died: nothing to do."""
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    jobs = q.take(["[n1]"], ok, journal).jobs
    q.put_back(jobs, journal)
    assert entries(path) == [{"command": "echo one"}, "echo two"]
    os.close(journal.fd)
    before = path.read_bytes()
    assert QueueFile(str(path)).recover() == (0, [])
    assert path.read_bytes() == before


def test_requeue_moves_every_entry_in_order_and_keeps_the_queue_text(tmp_path):
    q, path = make_queue(tmp_path)
    (tmp_path / "interrupted.yaml").write_text(
        "# interrupted 2026-01-01 00:00:00 for [n1]: x\n- command: echo A\n"
        "# interrupted 2026-01-01 00:00:01 for [n2]: y\n- command: echo {{ v }}\n  v: 'no'\n")
    assert q.requeue() == 2
    assert entries(path) == [{"command": "echo A"}, {"command": "echo {{ v }}", "v": "no"},
                             "echo one", "echo two"]
    assert path.read_text().endswith("- echo one  # first\n- echo two\n# trailing comment\n")
    assert q.requeue() == 0
    (j1, j2) = q.take(["[1]", "[2]"], ok).jobs
    assert (j2.command, j2.params) == ("echo {{ v }}", (("v", "no"),))


def test_requeue_with_no_interrupted_file(tmp_path):
    q, path = make_queue(tmp_path)
    assert q.requeue() == 0
    assert path.read_text() == QUEUE


# ---------------------------------------------------------------- crashes during recovery itself

class Crash(Exception):
    pass


def test_crash_during_recovery_does_not_put_a_job_back_twice(tmp_path, monkeypatch):
    """Pegasus B recovers A's journal and dies before removing it; C recovers again.

    B rewrote the queue with the job back at its head; the journal still says
    "taken, not launched". C must not insert it a second time (it would run twice).
    """
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    q.take(["[n1]"], ok, journal)
    die(journal)

    def crash(orphan):
        os.close(orphan.fd)  # B dies: its lock goes away, the file stays
        raise Crash()

    monkeypatch.setattr(journals, "discard", crash)
    with pytest.raises(Crash):
        QueueFile(str(path)).recover()
    assert entries(path) == [{"command": "echo one"}, "echo two"]
    monkeypatch.undo()
    QueueFile(str(path)).recover()
    assert entries(path) == [{"command": "echo one"}, "echo two"], (
        "the job is in the queue twice after a crash during recovery:\n" + path.read_text())


def test_crash_during_recovery_does_not_record_an_interrupted_job_twice(tmp_path, monkeypatch):
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    (job,) = q.take(["[n1]"], ok, journal).jobs
    journal.launched(job.ticket, "[n1]")
    die(journal)

    def crash(orphan):
        os.close(orphan.fd)
        raise Crash()

    monkeypatch.setattr(journals, "discard", crash)
    with pytest.raises(Crash):
        QueueFile(str(path)).recover()
    monkeypatch.undo()
    QueueFile(str(path)).recover()
    text = (tmp_path / "interrupted.yaml").read_text()
    assert yaml.safe_load(text) == [{"command": "echo one"}], (
        "'pegasus requeue' would run it twice:\n" + text)


def test_crash_while_recording_a_lost_job_does_not_record_it_twice(tmp_path, monkeypatch):
    """The loop records a lost job (interrupted.yaml, then the journal's `lost`) and dies
    between the two; the next start must not add a second interrupted.yaml entry."""
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    (job,) = q.take(["[n1]"], ok, journal).jobs
    journal.launched(job.ticket, "[n1]")

    def crash(ticket, node, reason):
        raise Crash()

    monkeypatch.setattr(journal, "lost", crash)
    with pytest.raises(Crash):
        q.add_interrupted(job, "[n1]", "connection lost", journal)
    die(journal)
    QueueFile(str(path)).recover()
    text = (tmp_path / "interrupted.yaml").read_text()
    assert yaml.safe_load(text) == [{"command": "echo one"}], (
        "'pegasus requeue' would run it twice:\n" + text)
