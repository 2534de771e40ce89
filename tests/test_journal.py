"""The job journal's recovery logic, on hand-written journal files.

``journal.read_orphans`` finds the journals of dead Pegasus processes and
says, for each, which jobs were taken but never launched (they go back to
the queue) and which were launched and never settled (outcome unknown: they
go to interrupted.yaml). ``records.recover``, ``records.open_run`` and
``requeue`` act on that; the round trips at the end run them on real files in
tmp_path.

A journal is "dead" when nobody holds an flock on it; the tests make one by
writing the file by hand (or by closing a real ``Journal`` without settling
its jobs, which keeps the file, as a crash would).

The void rule: every queue rewrite writes and fsyncs ``.queue.yaml.partial``,
journals its inode (``"partial"``), then renames it over queue.yaml. The last
rewrite a dead Pegasus journaled never happened iff a file with that inode is
still lying at the partial path. The tests make a rewrite "never happened" by
creating a real file there and journaling its inode, and "happened" by
renaming such a file over queue.yaml (or by having no partial file at all).
"""

import errno
import fcntl
import json
import os
import subprocess
import sys

import pytest
import yaml

from pegasus import atrest, faults
from pegasus import journal as journals
from pegasus.journal import Journal, read_orphans
from pegasus import records
from pegasus.errors import StorageError
from pegasus.queuefile import QueueFile
from pegasus.records import STOPPED, Records
from pegasus.yamltree import read_all

GONE = ".queue.yaml.partial-gone"  # the `partial` of a rewrite that happened long ago
ENTRY_A = {"command": "echo a"}
ENTRY_B = {"command": "echo {{ x }}", "x": "2"}
ENTRY_C = {"command": "echo c"}


@pytest.fixture(autouse=True)
def _files_at_rest(monkeypatch):
    """These tests take from files they have just written, as if written long ago
    (the wait for a file to rest has its own tests: test_queue_whole.py)."""
    monkeypatch.setattr(atrest, "QUIET", 0.0)


def ok(job):
    return None


def take(queue, targets, journal=None):
    """Take as broadcast mode does: the take is journaled on its own, and each
    launch would be recorded apart (so an unlaunched job goes back on recovery)."""
    return Records(queue, journal, broadcast=True).take(targets, ok)


# ---------------------------------------------------------------- helpers

def journal_path(folder, suffix="0123456789ab", queue="queue.yaml"):
    return str(folder / (".%s.journal-%s" % (queue, suffix)))


def write_journal(folder, records, suffix="0123456789ab", tail="", queue="queue.yaml"):
    """A dead Pegasus's journal: one JSON object a line, then ``tail`` (torn)."""
    path = journal_path(folder, suffix, queue)
    with open(path, "w") as f:
        for rec in records:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        f.write(tail)
    return path


def taken(ticket, entry, partial=GONE, target="[n1]"):
    return {"ev": "taken", "ticket": ticket, "entry": entry, "target": target,
            "partial": partial}


def launched(ticket, node="[n1]"):
    return {"ev": "launched", "ticket": ticket, "node": node}


def finished(ticket, node="[n1]", status=0):
    return {"ev": "finished", "ticket": ticket, "node": node, "exit": status}


def lost(ticket, node="[n1]", reason="connection lost"):
    return {"ev": "lost", "ticket": ticket, "node": node, "reason": reason}


def put_back(tickets, partial=GONE):
    return {"ev": "put-back", "tickets": list(tickets), "partial": partial}


def partial_path(folder, queue="queue.yaml"):
    return QueueFile(str(folder / queue)).new_partial()


def unrenamed(folder, queue="queue.yaml"):
    """A rewrite cut short: its temporary file written, never renamed. Its inode."""
    path = partial_path(folder, queue)
    with open(path, "w") as f:
        f.write("- the queue as the dead Pegasus meant to write it\n")
    return os.path.basename(path)


def renamed(folder, text="- echo z\n", queue="queue.yaml"):
    """A rewrite that happened: the temporary file renamed over the queue. Its inode."""
    path = partial_path(folder, queue)
    with open(path, "w") as f:
        f.write(text)
    os.replace(path, str(folder / queue))
    return os.path.basename(path)


def partial_inodes(folder, queue="queue.yaml"):
    """What recovery passes to read_orphans: the names of the partial files there."""
    return QueueFile(str(folder / queue)).partial_names()


def partial_inode(folder, queue="queue.yaml"):
    """The name of the one partial file lying there, or None."""
    names = partial_inodes(folder, queue)
    assert len(names) <= 1, names
    return next(iter(names), None)


def orphans_of(folder, queue="queue.yaml"):
    """read_orphans, then release them (the files stay: not removed)."""
    found = read_orphans(str(folder / queue), partial_inodes(folder, queue))
    for orphan in found:
        os.close(orphan.journal.fd)
    return found


def only(folder):
    found = orphans_of(folder)
    assert len(found) == 1, found
    return found[0]


def entries(path):
    return [item.value for item in read_all(open(str(path)).read(), str(path))[1]]


def die(journal):
    """What a crash leaves: the file, unlocked (its tickets are still open)."""
    assert journal.live_tickets, "a journal with every job settled is removed on close"
    journal.close()
    assert os.path.exists(journal.path)


# ---------------------------------------------------------------- read_orphans / _resolve

def test_taken_not_launched_is_unlaunched(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A)])
    orphan = only(tmp_path)
    assert orphan.unlaunched == [("t1", ENTRY_A)]
    assert orphan.interrupted == []


def test_launched_not_finished_is_interrupted_with_its_node(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A, target="[node-2 (gpu=1)]"),
                             launched("t1", "[node-2 (gpu=1)]")])
    orphan = only(tmp_path)
    assert orphan.unlaunched == []
    assert orphan.interrupted == [("t1", ENTRY_A, "[node-2 (gpu=1)]")]


@pytest.mark.parametrize("end", [finished("t1", status=0), finished("t1", status=137),
                                 lost("t1")], ids=["exit-0", "exit-137", "lost"])
def test_finished_or_lost_leaves_nothing(tmp_path, end):
    write_journal(tmp_path, [taken("t1", ENTRY_A), launched("t1"), end])
    orphan = only(tmp_path)
    assert (orphan.unlaunched, orphan.interrupted) == ([], [])


def test_put_back_leaves_nothing(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A), taken("t2", ENTRY_B),
                             put_back(["t1", "t2"], renamed(tmp_path))])
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
    assert orphan.unlaunched == [("t3", ENTRY_C)]
    assert orphan.interrupted == [("t2", ENTRY_B, "[n2]")]


def test_unlaunched_jobs_keep_their_taken_order(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A), taken("t2", ENTRY_B),
                             taken("t3", ENTRY_C, partial=renamed(tmp_path))])
    assert only(tmp_path).unlaunched == [("t1", ENTRY_A), ("t2", ENTRY_B), ("t3", ENTRY_C)]


# -- the void rule: a rewrite journaled but never done

def test_void_rule_last_take_never_happened(tmp_path):
    """Its temporary file is still there, un-renamed: the queue was not rewritten."""
    write_journal(tmp_path, [taken("t1", ENTRY_A, partial=unrenamed(tmp_path))])
    orphan = only(tmp_path)
    assert (orphan.unlaunched, orphan.interrupted) == ([], [])


def test_void_rule_only_when_the_inode_matches(tmp_path):
    """A partial file lies there, but it is not the one the take announced (that one
    became queue.yaml): the take happened."""
    write_journal(tmp_path, [taken("t1", ENTRY_A, partial=renamed(tmp_path))])
    other = unrenamed(tmp_path)
    assert other != os.lstat(str(tmp_path / "queue.yaml")).st_ino
    assert only(tmp_path).unlaunched == [("t1", ENTRY_A)]


def test_void_rule_covers_every_job_of_the_last_pop_and_nothing_before(tmp_path):
    before = renamed(tmp_path)
    now = unrenamed(tmp_path)
    write_journal(tmp_path, [
        taken("t1", ENTRY_A, partial=before), launched("t1"),  # earlier pop, really done
        taken("t2", ENTRY_B, partial=now), taken("t3", ENTRY_C, partial=now),
    ])
    orphan = only(tmp_path)
    assert orphan.unlaunched == []
    assert orphan.interrupted == [("t1", ENTRY_A, "[n1]")]


def test_void_rule_judges_each_rewrite_by_its_own_file(tmp_path):
    """Every rewrite has its own temporary file: one that was renamed is real,
    one whose file is still there is void, wherever it stands in the journal."""
    void = unrenamed(tmp_path)
    real = renamed(tmp_path)
    write_journal(tmp_path, [
        taken("t1", ENTRY_A, partial=void),
        taken("t2", ENTRY_B, partial=real),
    ])
    assert only(tmp_path).unlaunched == [("t2", ENTRY_B)]


def test_void_rule_voids_every_record_of_an_unrenamed_rewrite(tmp_path):
    """All jobs of a pop share its file: all are void together, others are not."""
    now = unrenamed(tmp_path)
    write_journal(tmp_path, [
        taken("t1", ENTRY_A, partial=now),
        taken("t2", ENTRY_B, partial=GONE),
        taken("t3", ENTRY_C, partial=now),
    ])
    assert only(tmp_path).unlaunched == [("t2", ENTRY_B)]


def test_void_put_back_means_the_jobs_are_still_out_of_the_queue(tmp_path):
    """put-back journaled, queue not rewritten: the jobs must still go back."""
    write_journal(tmp_path, [taken("t1", ENTRY_A, partial=renamed(tmp_path)),
                             put_back(["t1"], unrenamed(tmp_path))])
    assert only(tmp_path).unlaunched == [("t1", ENTRY_A)]


def test_no_partial_file_never_voids(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A, partial=renamed(tmp_path))])
    assert partial_inode(tmp_path) is None
    assert only(tmp_path).unlaunched == [("t1", ENTRY_A)]


def test_missing_queue_file_does_not_matter(tmp_path):
    """The user removed queue.yaml: the void rule looks at the partial file only."""
    write_journal(tmp_path, [taken("t1", ENTRY_A, partial=renamed(tmp_path))])
    os.unlink(str(tmp_path / "queue.yaml"))
    assert only(tmp_path).unlaunched == [("t1", ENTRY_A)]
    write_journal(tmp_path, [taken("t1", ENTRY_A, partial=unrenamed(tmp_path))])
    assert only(tmp_path).unlaunched == []


@pytest.mark.parametrize("void", [True, False], ids=["never-happened", "happened"])
def test_void_rule_ignores_edits_to_the_queue_after_the_crash(tmp_path, void):
    """Editing queue.yaml after the crash (in place or by an editor's rename) does not
    change whether the dead Pegasus's last take happened."""
    queue = tmp_path / "queue.yaml"
    inode = unrenamed(tmp_path) if void else renamed(tmp_path)
    write_journal(tmp_path, [taken("t1", ENTRY_A, partial=inode)])
    expected = [] if void else [("t1", ENTRY_A)]
    assert only(tmp_path).unlaunched == expected
    with open(str(queue), "a") as f:  # edited in place
        f.write("- echo added later\n")
    assert only(tmp_path).unlaunched == expected
    (tmp_path / "queue.yaml.swp").write_text("- echo rewritten by an editor\n")
    os.replace(str(tmp_path / "queue.yaml.swp"), str(queue))  # replaced: new inode
    assert only(tmp_path).unlaunched == expected
    os.unlink(str(queue))  # removed
    assert only(tmp_path).unlaunched == expected


# -- torn and damaged journals

def test_torn_last_line_is_ignored(tmp_path):
    record = json.dumps(finished("t1"), separators=(",", ":"))
    write_journal(tmp_path, [taken("t1", ENTRY_A), launched("t1")],
                  tail=record[:len(record) // 2])
    orphan = only(tmp_path)
    assert orphan.interrupted == [("t1", ENTRY_A, "[n1]")]  # the half "finished" does not count


def test_torn_last_line_that_would_parse_is_still_ignored(tmp_path):
    """A complete-looking JSON object without its newline was still being written."""
    write_journal(tmp_path, [taken("t1", ENTRY_A), launched("t1")],
                  tail=json.dumps(finished("t1")))
    assert only(tmp_path).interrupted == [("t1", ENTRY_A, "[n1]")]


def test_torn_multi_record_take_is_void(tmp_path):
    """A crash in the middle of writing one pop's records: the pop never happened."""
    now = unrenamed(tmp_path)
    second = json.dumps(taken("t2", ENTRY_B, partial=now), separators=(",", ":"))
    write_journal(tmp_path, [taken("t1", ENTRY_A, partial=now)], tail=second[:20])
    orphan = only(tmp_path)
    assert (orphan.unlaunched, orphan.interrupted) == ([], [])


def test_empty_and_garbage_lines_do_not_stop_recovery(tmp_path):
    path = journal_path(tmp_path)
    with open(path, "w") as f:
        f.write(json.dumps(taken("t1", ENTRY_A)) + "\n")
        f.write("\x00\x00 not json\n\n")
        f.write(json.dumps(launched("t1")) + "\n")
    assert only(tmp_path).interrupted == [("t1", ENTRY_A, "[n1]")]


def test_empty_journal_is_an_orphan_with_nothing(tmp_path):
    path = write_journal(tmp_path, [])
    orphan = only(tmp_path)
    assert (orphan.journal.path, orphan.unlaunched, orphan.interrupted) == (path, [], [])


# -- whose journals

def test_a_journal_locked_by_another_fd_is_not_touched(tmp_path):
    path = write_journal(tmp_path, [taken("t1", ENTRY_A)])
    before = open(path, "rb").read()
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert read_orphans(str(tmp_path / "queue.yaml"), set()) == []
    finally:
        os.close(fd)
    assert open(path, "rb").read() == before
    assert only(tmp_path).unlaunched == [("t1", ENTRY_A)]  # its owner is gone now


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
        assert records.recover(queue) == (0, [])
        assert os.path.exists(path)
        assert (tmp_path / "queue.yaml").read_text() == "- echo z\n"
        assert not (tmp_path / "interrupted.yaml").exists()
    finally:
        owner.stdin.close()
        owner.wait(timeout=30)
    assert records.recover(queue) == (0, [(ENTRY_A, "[n1]", None)])  # the owner died
    assert not os.path.exists(path)


def test_a_live_journal_is_not_an_orphan(tmp_path):
    journal = Journal.create(str(tmp_path / "queue.yaml"))
    try:
        journal.taken([(journal.new_ticket(), ENTRY_A, "[n1]")], unrenamed(tmp_path))
        assert read_orphans(str(tmp_path / "queue.yaml"), partial_inodes(tmp_path)) == []
    finally:
        os.close(journal.fd)


def test_journals_of_another_queue_file_are_not_read(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A)], queue="other.yaml")
    write_journal(tmp_path, [taken("t2", ENTRY_B)], queue="queue.yaml.bak")
    assert orphans_of(tmp_path) == []
    assert [o.unlaunched for o in orphans_of(tmp_path, queue="other.yaml")] == [
        [("t1", ENTRY_A)]]


def test_another_queue_files_partial_file_does_not_void(tmp_path):
    """other.yaml's un-renamed temporary file says nothing about queue.yaml's takes."""
    inode = unrenamed(tmp_path, queue="other.yaml")
    write_journal(tmp_path, [taken("t1", ENTRY_A, partial=inode)])
    assert only(tmp_path).unlaunched == [("t1", ENTRY_A)]


def test_queue_path_with_glob_characters(tmp_path):
    folder = tmp_path / "runs [1]*?"
    folder.mkdir()
    write_journal(folder, [taken("t1", ENTRY_A)])
    assert [o.unlaunched for o in orphans_of(folder)] == [[("t1", ENTRY_A)]]
    write_journal(folder, [taken("t1", ENTRY_A, partial=unrenamed(folder))])
    assert [o.unlaunched for o in orphans_of(folder)] == [[]]


def test_several_orphans_are_all_found(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A)], suffix="aaaaaaaaaaaa")
    write_journal(tmp_path, [taken("t2", ENTRY_B), launched("t2", "[n2]")],
                  suffix="bbbbbbbbbbbb")
    found = orphans_of(tmp_path)
    assert [(o.unlaunched, o.interrupted) for o in found] == [
        ([("t1", ENTRY_A)], []), ([], [("t2", ENTRY_B, "[n2]")])]


def test_remove_deletes_the_orphan_journal_and_closes_it(tmp_path):
    path = write_journal(tmp_path, [taken("t1", ENTRY_A)])
    (orphan,) = read_orphans(str(tmp_path / "queue.yaml"), set())
    assert orphan.journal.path == path
    orphan.journal.remove()
    assert not os.path.exists(path)
    with pytest.raises(OSError):
        os.fstat(orphan.journal.fd)  # closed


def test_recovery_records_stay_readable_after_a_torn_line(tmp_path):
    """A crash mid-record leaves a line without its newline: recovery's own
    records must not be glued to it, or a recovery cut short would put the
    job back a second time."""
    path = write_journal(tmp_path, [taken("t1", ENTRY_A)])
    with open(path, "a") as f:
        f.write('{"ev":"launched","ticket":"t1","no')  # torn by the crash
    (orphan,) = read_orphans(str(tmp_path / "queue.yaml"), set())
    try:
        assert orphan.unlaunched == [("t1", ENTRY_A)]
        orphan.journal.put_back(["t1"], 7)  # then recovery dies
    finally:
        os.close(orphan.journal.fd)
    assert json.loads(open(path).read().splitlines()[-1])["ev"] == "put-back"
    assert only(tmp_path).unlaunched == []  # the next recovery puts nothing back


def test_an_orphan_journal_is_locked_and_writable_by_its_recoverer(tmp_path):
    """Recovery journals its own put-backs in the dead run's journal."""
    path = write_journal(tmp_path, [taken("t1", ENTRY_A)])
    (orphan,) = read_orphans(str(tmp_path / "queue.yaml"), set())
    try:
        assert read_orphans(str(tmp_path / "queue.yaml"), set()) == []  # locked by us
        orphan.journal.put_back(["t1"], 1234)
    finally:
        os.close(orphan.journal.fd)
    last = json.loads(open(path).read().splitlines()[-1])
    assert last == {"ev": "put-back", "tickets": ["t1"], "partial": 1234}
    assert only(tmp_path).unlaunched == []


def test_a_take_that_records_its_launch_is_interrupted_once_the_queue_is_rewritten(tmp_path):
    """Queue mode writes taken and launched in one record batch, one fsync."""
    journal = Journal.create(str(tmp_path / "queue.yaml"))
    t1, t2 = journal.new_ticket(), journal.new_ticket()
    journal.taken([(t1, ENTRY_A, "[n1]"), (t2, ENTRY_C, "[n2]")], renamed(tmp_path),
                  launched=True)
    assert [json.loads(x)["ev"] for x in open(journal.path).read().splitlines()] == \
        ["taken", "taken", "launched", "launched"]
    journal.finished(t2, "[n2]", 0)
    die(journal)
    orphan = only(tmp_path)
    assert (orphan.unlaunched, orphan.interrupted) == ([], [(t1, ENTRY_A, "[n1]")])


def test_a_void_take_that_records_its_launch_leaves_the_job_in_the_queue(tmp_path):
    """Crash before the rename: the take never happened, nor did its launch."""
    journal = Journal.create(str(tmp_path / "queue.yaml"))
    ticket = journal.new_ticket()
    journal.taken([(ticket, ENTRY_A, "[n1]")], unrenamed(tmp_path), launched=True)
    die(journal)
    orphan = only(tmp_path)
    assert (orphan.unlaunched, orphan.interrupted) == ([], [])


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
    assert orphan.interrupted == [("t1", ENTRY_A, "[n2]")]


def test_broadcast_finish_on_an_unlaunched_node_settles_nothing(tmp_path):
    write_journal(tmp_path, [
        taken("t1", ENTRY_A, target="broadcast to 2 sub-nodes"),
        launched("t1", "[n1]"), launched("t1", "[n2]"),
        finished("t1", "[n9]", 0),
    ])
    assert only(tmp_path).interrupted == [("t1", ENTRY_A, "[n1]"), ("t1", ENTRY_A, "[n2]")]


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
    journal.taken([(ticket, ENTRY_A, "[n1]")], 4321)
    journal.launched(ticket, "[n1]")
    journal.finished(ticket, "[n1]", 3)
    lines = open(journal.path).read().splitlines()
    assert [json.loads(line)["ev"] for line in lines] == ["taken", "launched", "finished"]
    assert json.loads(lines[0])["partial"] == 4321
    assert "pre" not in json.loads(lines[0])
    assert json.loads(lines[2])["exit"] == 3
    journal.close()
    assert not os.path.exists(journal.path)


def test_journal_with_an_open_job_survives_close(tmp_path):
    journal = Journal.create(str(tmp_path / "queue.yaml"))
    ticket = journal.new_ticket()
    journal.taken([(ticket, ENTRY_A, "[n1]")], GONE)
    journal.launched(ticket, "[n1]")
    die(journal)
    assert only(tmp_path).interrupted == [(ticket, ENTRY_A, "[n1]")]


def test_journal_entry_with_newlines_and_unicode_survives(tmp_path):
    entry = {"command": "printf 'a\\nb'\necho \"é\" $x", "x": "it's"}
    journal = Journal.create(str(tmp_path / "queue.yaml"))
    ticket = journal.new_ticket()
    journal.taken([(ticket, entry, "[n1]")], GONE)
    die(journal)
    assert only(tmp_path).unlaunched == [(ticket, entry)]


def test_journal_remove_deletes_even_with_open_tickets(tmp_path):
    journal = Journal.create(str(tmp_path / "queue.yaml"))
    journal.taken([(journal.new_ticket(), ENTRY_A, "[n1]")], GONE)
    journal.remove()
    assert not os.path.exists(journal.path)
    with pytest.raises(OSError):
        os.fstat(journal.fd)


# ---------------------------------------------------------------- QueueFile round trips

QUEUE = "# my queue\n- echo one  # first\n- echo two\n# trailing comment\n"


class Crash(Exception):
    pass


def make_queue(tmp_path, text=QUEUE):
    path = tmp_path / "queue.yaml"
    path.write_text(text)
    return QueueFile(str(path)), path


def journals_left(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if ".journal-" in p.name)


def crash_at(monkeypatch, step):
    """Like PEGASUS_FAULT=<step>, in process: raise Crash (once) at that step."""
    real = faults.point

    def point(name):
        if name == step:
            monkeypatch.setattr(faults, "point", real)
            raise Crash(step)
        real(name)

    monkeypatch.setattr(faults, "point", point)


def test_recover_puts_an_unlaunched_job_back_at_the_head(tmp_path):
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    job = take(q, ["[n1]"], journal).jobs[0]
    assert path.read_text() == "# my queue\n- echo two\n# trailing comment\n"
    die(journal)
    assert records.recover(QueueFile(str(path))) == (1, [])
    assert entries(path) == [{"command": "echo one"}, "echo two"]
    assert path.read_text().endswith("- echo two\n# trailing comment\n")
    assert job.ticket is not None
    assert journals_left(tmp_path) == []
    assert not (tmp_path / "interrupted.yaml").exists()


def test_take_journals_the_inode_that_becomes_the_queue(tmp_path):
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    (job,) = take(q, ["[n1]"], journal).jobs
    (record,) = [json.loads(line) for line in open(journal.path).read().splitlines()]
    partial = record.pop("partial")
    assert record == {"ev": "taken", "ticket": job.ticket, "entry": {"command": "echo one"},
                      "target": "[n1]", "id": 1}
    assert partial.startswith(".queue.yaml.partial-")  # its own temporary file ...
    assert not (tmp_path / partial).exists()  # ... renamed over the queue
    assert partial_inode(tmp_path) is None
    journal.put_back([job.ticket], 0)  # settle it: close() removes the journal
    journal.close()


def test_recover_puts_several_unlaunched_jobs_back_in_order(tmp_path):
    q, path = make_queue(tmp_path, "- a\n- command: b{{x}}\n  x: [1, 2, 3]\n- c\n")
    journal = Journal.create(str(path))
    taken_jobs = take(q, ["[1]", "[2]", "[3]"], journal).jobs
    assert [j.command for j in taken_jobs] == ["a", "b{{x}}", "b{{x}}"]
    die(journal)
    assert records.recover(QueueFile(str(path))) == (3, [])
    assert entries(path) == [{"command": "a"}, {"command": "b{{x}}", "x": "1"},
                             {"command": "b{{x}}", "x": "2"},
                             {"command": "b{{x}}", "x": "3"}, "c"]


def test_recover_records_an_interrupted_job_and_requeue_moves_it_back(tmp_path):
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    (job,) = take(q, ["[node-2 (gpu=0)]"], journal).jobs
    journal.launched(job.ticket, "[node-2 (gpu=0)]")
    die(journal)
    q2 = QueueFile(str(path))
    assert records.recover(q2) == (0, [({"command": "echo one"}, "[node-2 (gpu=0)]", 1)])
    assert entries(path) == ["echo two"]
    text = (tmp_path / "interrupted.yaml").read_text()
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert len(comments) == 1
    assert comments[0].startswith("# interrupted ")
    assert comments[0].endswith(" for [node-2 (gpu=0)]: " + STOPPED)
    assert yaml.safe_load(text) == [{"command": "echo one"}]
    assert journals_left(tmp_path) == []
    assert records.recover(q2) == (0, [])  # settled once only
    assert yaml.safe_load((tmp_path / "interrupted.yaml").read_text()) == [
        {"command": "echo one"}]

    assert len(records.requeue(q2)) == 1
    assert entries(path) == [{"command": "echo one"}, "echo two"]
    assert path.read_text().endswith("- echo two\n# trailing comment\n")
    assert yaml.safe_load((tmp_path / "interrupted.yaml").read_text()) is None
    assert len(records.requeue(q2)) == 0
    assert entries(path) == [{"command": "echo one"}, "echo two"]
    # and it runs as the same job it was
    (again,) = take(q2, ["[n1]"]).jobs
    assert (again.command, again.params) == (job.command, job.params)


def test_recover_nothing_for_a_finished_job(tmp_path):
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    (job,) = take(q, ["[n1]"], journal).jobs
    journal.launched(job.ticket, "[n1]")
    journal.finished(job.ticket, "[n1]", 0)
    os.close(journal.fd)  # died after the finish record, before close()
    before = path.read_bytes()
    assert records.recover(QueueFile(str(path))) == (0, [])
    assert path.read_bytes() == before
    assert journals_left(tmp_path) == []


def test_recover_void_take_leaves_the_queue_as_it_was(tmp_path, monkeypatch):
    """Crash after the `taken` record, before the rename (faults: taken-journaled)."""
    q, path = make_queue(tmp_path)
    before = path.read_bytes()
    journal = Journal.create(str(path))
    crash_at(monkeypatch, "taken-journaled")
    with pytest.raises(Crash):
        take(q, ["[n1]"], journal)
    die(journal)
    (record,) = [json.loads(line) for line in open(journal.path).read().splitlines()]
    assert record["ev"] == "taken"
    assert record["partial"] == partial_inode(tmp_path)  # written, never renamed
    assert path.read_bytes() == before
    assert records.recover(QueueFile(str(path))) == (0, [])
    assert path.read_bytes() == before
    assert journals_left(tmp_path) == []
    assert not (tmp_path / "interrupted.yaml").exists()


def test_recover_a_take_that_happened_just_after_the_rename(tmp_path, monkeypatch):
    """Crash after the rename, before consumed.yaml (faults: queue-rewritten)."""
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    crash_at(monkeypatch, "queue-rewritten")
    with pytest.raises(Crash):
        take(q, ["[n1]"], journal)
    die(journal)
    assert entries(path) == ["echo two"]
    assert records.recover(QueueFile(str(path))) == (1, [])
    assert entries(path) == [{"command": "echo one"}, "echo two"]


@pytest.mark.parametrize("edit", ["append", "editor-rename"])
def test_recover_void_take_then_the_queue_edited(tmp_path, monkeypatch, edit):
    """The user edits queue.yaml after the crash: the take still never happened."""
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    crash_at(monkeypatch, "taken-journaled")
    with pytest.raises(Crash):
        take(q, ["[n1]"], journal)
    die(journal)
    edited = QUEUE + "- echo three\n"
    if edit == "append":
        with open(str(path), "a") as f:
            f.write("- echo three\n")
    else:
        (tmp_path / "queue.yaml~").write_text(edited)
        os.replace(str(tmp_path / "queue.yaml~"), str(path))
    assert records.recover(QueueFile(str(path))) == (0, [])
    assert path.read_text() == edited
    assert journals_left(tmp_path) == []


@pytest.mark.parametrize("edit", ["append", "editor-rename"])
def test_recover_real_take_then_the_queue_edited(tmp_path, edit):
    """The user edits queue.yaml after the crash: the take still happened, the job
    goes back once, and the edit is kept."""
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    take(q, ["[n1]"], journal)
    die(journal)
    if edit == "append":
        with open(str(path), "a") as f:
            f.write("- echo three\n")
    else:
        (tmp_path / "queue.yaml~").write_text(path.read_text() + "- echo three\n")
        os.replace(str(tmp_path / "queue.yaml~"), str(path))
    assert records.recover(QueueFile(str(path))) == (1, [])
    assert entries(path) == [{"command": "echo one"}, "echo two", "echo three"]


def test_recover_a_pop_that_mixes_every_state(tmp_path):
    q, path = make_queue(tmp_path, "- a\n- b\n- c\n- d\n")
    journal = Journal.create(str(path))
    ja, jb, jc = take(q, ["[1]", "[2]", "[3]"], journal).jobs
    journal.launched(ja.ticket, "[1]")
    journal.finished(ja.ticket, "[1]", 0)
    journal.launched(jb.ticket, "[2]")
    die(journal)
    assert records.recover(QueueFile(str(path))) == (1, [({"command": "b"}, "[2]", 2)])
    assert entries(path) == [{"command": "c"}, "d"]


def test_recover_leaves_a_live_pegasus_alone(tmp_path):
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    (job,) = take(q, ["[n1]"], journal).jobs
    before = path.read_bytes()
    try:
        assert records.recover(QueueFile(str(path))) == (0, [])
        assert path.read_bytes() == before
        assert os.path.exists(journal.path)
    finally:
        die(journal)


def test_recover_after_a_put_back(tmp_path):
    """A job that could not be sent went back; then Pegasus died: nothing to do."""
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    jobs = take(q, ["[n1]"], journal).jobs
    Records(q, journal).put_back(jobs)
    assert entries(path) == [{"command": "echo one"}, "echo two"]
    last = json.loads(open(journal.path).read().splitlines()[-1])
    partial = last.pop("partial")
    assert last == {"ev": "put-back", "tickets": [jobs[0].ticket]}
    assert partial.startswith(".queue.yaml.partial-") and not (tmp_path / partial).exists()
    os.close(journal.fd)
    before = path.read_bytes()
    assert records.recover(QueueFile(str(path))) == (0, [])
    assert path.read_bytes() == before


def test_recover_after_a_put_back_that_never_happened(tmp_path, monkeypatch):
    """put-back journaled, crash before the rename: recovery puts the job back."""
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    jobs = take(q, ["[n1]"], journal).jobs
    real_replace = os.replace

    def crash(src, dst):
        monkeypatch.setattr(os, "replace", real_replace)
        raise Crash()

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(Crash):
        Records(q, journal).put_back(jobs)
    os.close(journal.fd)  # put_back settled its tickets in memory: it died anyway
    assert entries(path) == ["echo two"]
    assert records.recover(QueueFile(str(path))) == (1, [])
    assert entries(path) == [{"command": "echo one"}, "echo two"]


def test_open_run_recovers_then_creates_a_live_journal(tmp_path):
    q, path = make_queue(tmp_path)
    dead = Journal.create(str(path))
    (job,) = take(q, ["[n1]"], dead).jobs
    dead.launched(job.ticket, "[n1]")
    take(q, ["[n2]"], dead)  # taken, never launched
    die(dead)
    assert entries(path) == []
    opened, put_back_count, interrupted = records.open_run(QueueFile(str(path)), True)
    journal = opened.journal
    try:
        assert (put_back_count, interrupted) == (1, [({"command": "echo one"}, "[n1]", 1)])
        assert entries(path) == [{"command": "echo two"}]
        assert journals_left(tmp_path) == [os.path.basename(journal.path)]
        assert journal.path != dead.path
        assert records.recover(QueueFile(str(path))) == (0, [])  # ours is alive: not an orphan
        assert os.path.exists(journal.path)
        (mine,) = take(q, ["[n3]"], journal).jobs
        assert mine.command == "echo two"
    finally:
        die(journal)
    assert records.recover(QueueFile(str(path))) == (1, [])
    assert entries(path) == [{"command": "echo two"}]


def test_requeue_moves_every_entry_in_order_and_keeps_the_queue_text(tmp_path):
    q, path = make_queue(tmp_path)
    (tmp_path / "interrupted.yaml").write_text(
        "# interrupted 2026-01-01 00:00:00 for [n1]: x\n- command: echo A\n"
        "# interrupted 2026-01-01 00:00:01 for [n2]: y\n- command: echo {{ v }}\n  v: 'no'\n")
    assert len(records.requeue(q)) == 2
    assert entries(path) == [{"command": "echo A"}, {"command": "echo {{ v }}", "v": "no"},
                             "echo one", "echo two"]
    assert path.read_text().endswith("- echo one  # first\n- echo two\n# trailing comment\n")
    assert len(records.requeue(q)) == 0
    (j1, j2) = take(q, ["[1]", "[2]"]).jobs
    assert (j2.command, j2.params) == ("echo {{ v }}", (("v", "no"),))


def test_requeue_with_no_interrupted_file(tmp_path):
    q, path = make_queue(tmp_path)
    assert len(records.requeue(q)) == 0
    assert path.read_text() == QUEUE


def test_requeue_first_settles_dead_journals(tmp_path):
    """A dead run's launched job goes to interrupted.yaml and then to the head with
    the rest; its unlaunched job goes back to the head first."""
    q, path = make_queue(tmp_path, "- a\n- b\n- c\n")
    (tmp_path / "interrupted.yaml").write_text(
        "# interrupted 2026-01-01 00:00:00 for [n9]: x\n- command: old\n")
    journal = Journal.create(str(path))
    ja, jb = take(q, ["[1]", "[2]"], journal).jobs
    journal.launched(ja.ticket, "[1]")
    die(journal)
    assert len(records.requeue(q)) == 2
    assert entries(path) == [{"command": "old"}, {"command": "a"}, {"command": "b"}, "c"]
    assert journals_left(tmp_path) == []
    assert yaml.safe_load((tmp_path / "interrupted.yaml").read_text()) is None


# ---------------------------------------------------------------- interrupted.yaml: once

def test_interrupted_once_per_entry_and_node(tmp_path):
    q, path = make_queue(tmp_path, "- a\n- a\n- b\n")
    ja1, ja2, jb = take(q, ["[1]", "[2]", "[3]"]).jobs
    Records(q).lost(ja1, "[n1]", "connection lost")
    Records(q).lost(ja1, "[n1]", "connection lost")  # the same record again: skipped
    Records(q).lost(ja1, "[n2]", "connection lost")  # another node: recorded
    Records(q).lost(jb, "[n1]", "connection lost")  # another entry: recorded
    text = (tmp_path / "interrupted.yaml").read_text()
    assert yaml.safe_load(text) == [{"command": "a"}, {"command": "a"}, {"command": "b"}]
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert [c.split(" for ")[1] for c in comments] == [
        "[n1]: connection lost", "[n2]: connection lost", "[n1]: connection lost"]


def test_interrupted_entry_that_is_a_prefix_of_a_recorded_one_is_still_recorded(tmp_path):
    """`- command: echo a` is the first line of `- command: echo a` + `x: '1'`: a
    different job, which must be recorded too (else requeue never runs it)."""
    q, path = make_queue(tmp_path, "- command: echo a\n  x: '1'\n- echo a\n")
    longer, shorter = take(q, ["[1]", "[2]"]).jobs
    Records(q).lost(longer, "[n1]", "connection lost")
    Records(q).lost(shorter, "[n1]", "connection lost")
    text = (tmp_path / "interrupted.yaml").read_text()
    assert yaml.safe_load(text) == [{"command": "echo a", "x": "1"}, {"command": "echo a"}], (
        "a lost job is missing from interrupted.yaml:\n" + text)


# ---------------------------------------------------------------- crashes during recovery itself

def crash_in_remove(monkeypatch):
    """The recovering Pegasus dies as it removes the orphan's journal: its lock goes
    away, the file stays (once; later calls remove for real)."""
    real = Journal.remove

    def remove(self):
        monkeypatch.setattr(Journal, "remove", real)
        os.close(self.fd)
        raise Crash()

    monkeypatch.setattr(Journal, "remove", remove)


def test_crash_during_recovery_does_not_put_a_job_back_twice(tmp_path, monkeypatch):
    """Pegasus B recovers A's journal and dies before removing it; C recovers again.

    B rewrote the queue with the job back at its head (and journaled that put-back
    in A's journal); C must not insert it a second time (it would run twice).
    """
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    take(q, ["[n1]"], journal)
    die(journal)

    crash_in_remove(monkeypatch)
    with pytest.raises(Crash):
        records.recover(QueueFile(str(path)))
    assert entries(path) == [{"command": "echo one"}, "echo two"]
    assert journals_left(tmp_path) == [os.path.basename(journal.path)]
    assert json.loads(open(journal.path).read().splitlines()[-1])["ev"] == "put-back"
    assert records.recover(QueueFile(str(path))) == (0, [])
    assert entries(path) == [{"command": "echo one"}, "echo two"], (
        "the job is in the queue twice after a crash during recovery:\n" + path.read_text())
    assert journals_left(tmp_path) == []


def test_crash_during_recovery_before_its_rename_puts_the_job_back_once(tmp_path,
                                                                       monkeypatch):
    """B journals its put-back and dies before renaming: C must still put it back."""
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    take(q, ["[n1]"], journal)
    die(journal)
    real_replace = os.replace

    def crash(src, dst):
        monkeypatch.setattr(os, "replace", real_replace)
        raise Crash()

    monkeypatch.setattr(os, "replace", crash)
    seen = []
    real_read = journals.read_orphans

    def read_orphans_seen(*args):
        seen.extend(real_read(*args))
        return seen

    monkeypatch.setattr(journals, "read_orphans", read_orphans_seen)
    with pytest.raises(Crash):
        records.recover(QueueFile(str(path)))
    monkeypatch.setattr(journals, "read_orphans", real_read)
    (orphan,) = seen
    os.close(orphan.journal.fd)  # B dies: its lock on A's journal goes away
    assert json.loads(open(journal.path).read().splitlines()[-1])["ev"] == "put-back"
    assert entries(path) == ["echo two"]
    assert records.recover(QueueFile(str(path))) == (1, [])
    assert entries(path) == [{"command": "echo one"}, "echo two"]
    assert journals_left(tmp_path) == []


def test_crash_during_recovery_does_not_record_an_interrupted_job_twice(tmp_path, monkeypatch):
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    (job,) = take(q, ["[n1]"], journal).jobs
    journal.launched(job.ticket, "[n1]")
    die(journal)

    crash_in_remove(monkeypatch)
    with pytest.raises(Crash):
        records.recover(QueueFile(str(path)))
    assert yaml.safe_load((tmp_path / "interrupted.yaml").read_text()) == [
        {"command": "echo one"}]
    records.recover(QueueFile(str(path)))
    text = (tmp_path / "interrupted.yaml").read_text()
    assert yaml.safe_load(text) == [{"command": "echo one"}], (
        "'pegasus requeue' would run it twice:\n" + text)
    assert journals_left(tmp_path) == []


def test_crash_while_recording_a_lost_job_does_not_record_it_twice(tmp_path, monkeypatch):
    """The loop records a lost job (interrupted.yaml, then the journal's `lost`) and dies
    between the two; the next start must not add a second interrupted.yaml entry."""
    q, path = make_queue(tmp_path)
    journal = Journal.create(str(path))
    (job,) = take(q, ["[n1]"], journal).jobs
    journal.launched(job.ticket, "[n1]")

    def crash(ticket, node, reason, last=True):
        raise Crash()

    monkeypatch.setattr(journal, "lost", crash)
    with pytest.raises(Crash):
        Records(q, journal).lost(job, "[n1]", "connection lost")
    die(journal)
    assert records.recover(QueueFile(str(path))) == (0, [({"command": "echo one"}, "[n1]", 1)])
    text = (tmp_path / "interrupted.yaml").read_text()
    assert yaml.safe_load(text) == [{"command": "echo one"}], (
        "'pegasus requeue' would run it twice:\n" + text)


# ---------------------------------------------------------------- the void rule's evidence

def test_a_void_take_stays_void_after_another_pegasus_rewrites_the_queue(tmp_path,
                                                                         monkeypatch):
    """Two Pegasus share the queue. A dies between journaling a take and the rename;
    B, alive (it recovered at its start, before A died), takes the same job and runs it.
    B's rewrite replaces the partial file A left. A later recovery must not put A's job
    back: its take never happened, and B already ran it."""
    q, path = make_queue(tmp_path)
    a = Journal.create(str(path))
    b = Journal.create(str(path))
    crash_at(monkeypatch, "taken-journaled")
    with pytest.raises(Crash):
        take(q, ["[n1]"], a)
    die(a)
    assert entries(path) == ["echo one", "echo two"]
    (job,) = take(QueueFile(str(path)), ["[n2]"], b).jobs
    assert job.command == "echo one"
    b.launched(job.ticket, "[n2]")
    b.finished(job.ticket, "[n2]", 0)
    b.close()
    records.recover(QueueFile(str(path)))
    assert entries(path) == ["echo two"], (
        "a take that never happened was put back: 'echo one' runs twice:\n"
        + path.read_text())


def test_crash_during_recovery_keeps_a_void_take_void(tmp_path, monkeypatch):
    """A took `a` (done), then crashed journaling the take of `b` (void). B recovers:
    puts `a` back (that rewrite replaces A's partial file), dies before removing A's
    journal. C recovers again: `b` never left the queue and must not go back."""
    q, path = make_queue(tmp_path, "- a\n- b\n- c\n")
    journal = Journal.create(str(path))
    take(q, ["[1]"], journal)
    crash_at(monkeypatch, "taken-journaled")
    with pytest.raises(Crash):
        take(q, ["[2]"], journal)
    die(journal)
    assert entries(path) == ["b", "c"]

    crash_in_remove(monkeypatch)
    with pytest.raises(Crash):
        records.recover(QueueFile(str(path)))
    assert entries(path) == [{"command": "a"}, "b", "c"]
    records.recover(QueueFile(str(path)))
    assert entries(path) == [{"command": "a"}, "b", "c"], (
        "a take that never happened was put back after a crash during recovery:\n"
        + path.read_text())


# ---------------------------------------------------------------- a full disk

@pytest.mark.parametrize("queue_mode", [True, False], ids=["queue", "broadcast"])
def test_a_take_whose_record_cannot_be_written_leaves_nothing_behind(tmp_path, monkeypatch,
                                                                     queue_mode):
    """The disk fills up in the middle of the "taken" record (the new queue file was
    written): the half record is taken back, the temporary queue file removed, the
    queue left as it was, and the journal goes when the run ends."""
    path = tmp_path / "queue.yaml"
    path.write_text("- echo a\n- echo b\n")
    opened, _, _ = records.open_run(QueueFile(str(path)), broadcast=not queue_mode)
    real = journals.write_all

    def half_then_full(fd, data):
        real(fd, data[:len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(journals, "write_all", half_then_full)
    with pytest.raises(StorageError, match="no space left"):
        opened.take(["[n1]"], ok)
    monkeypatch.undo()
    assert os.path.getsize(opened.journal.path) == 0  # no half record
    assert partial_inode(tmp_path) is None
    assert path.read_text() == "- echo a\n- echo b\n"
    opened.close()
    assert sorted(os.listdir(str(tmp_path))) == [".queue.yaml.job-id", ".queue.yaml.lock",
                                                 "queue.yaml"]  # the id counter stays


# ---------------------------------------------------------------- retries (issue 13)

LEFT_A = {"command": "echo a", "retries": "1"}  # the entry with the retries it has left


def retry(ticket, entry=LEFT_A):
    return {"ev": "retry", "ticket": ticket, "entry": entry}


@pytest.mark.parametrize("end", [finished("t1", status=1), lost("t1")], ids=["failed", "lost"])
def test_a_crash_between_attempts_puts_the_job_back_with_the_retries_it_has_left(
        tmp_path, end):
    write_journal(tmp_path, [taken("t1", ENTRY_A), launched("t1"), end, retry("t1")])
    orphan = only(tmp_path)
    assert orphan.unlaunched == [("t1", LEFT_A)]
    assert orphan.interrupted == []


def test_a_crash_during_the_next_attempt_is_interrupted_where_it_runs(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A), launched("t1"), finished("t1", status=1),
                             retry("t1"), launched("t1", "[n2]")])
    orphan = only(tmp_path)
    assert orphan.unlaunched == []
    assert orphan.interrupted == [("t1", ENTRY_A, "[n2]")]


def test_a_retried_job_that_finished_leaves_nothing(tmp_path):
    write_journal(tmp_path, [taken("t1", ENTRY_A), launched("t1"), finished("t1", status=1),
                             retry("t1"), launched("t1", "[n2]"), finished("t1", "[n2]")])
    orphan = only(tmp_path)
    assert (orphan.unlaunched, orphan.interrupted) == ([], [])


def test_a_job_waiting_for_its_retry_stays_live_through_a_compaction(tmp_path):
    journal = Journal.create(str(tmp_path / "queue.yaml"))
    journal.limit = 0  # compact at every chance
    ticket = journal.new_ticket()
    journal.taken([(ticket, ENTRY_A, "[n1]")], GONE, launched=True)
    journal.finished(ticket, "[n1]", 1, retry=LEFT_A)
    for _ in range(10):  # settled jobs: a compaction drops their lines
        done = journal.new_ticket()
        journal.taken([(done, ENTRY_B, "[n2]")], GONE, launched=True)
        journal.finished(done, "[n2]", 0)
    assert journal.compact_if_large()
    die(journal)
    assert only(tmp_path).unlaunched == [(ticket, LEFT_A)]
