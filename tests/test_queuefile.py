"""The queue file: pop the head under the lock, keep the rest byte for byte."""

import fcntl
import os
import subprocess
import sys

import pytest
import yaml

from pegasus import atrest
from pegasus.errors import InputError
from pegasus.queuefile import QueueFile
from pegasus.records import Records
from pegasus.yamltree import read_all


def ok(job):
    return None


@pytest.fixture(autouse=True)
def _files_at_rest(monkeypatch):
    """These tests take from files they have just written, as if written long ago
    (the wait for a file to rest has its own tests: test_queue_whole.py)."""
    monkeypatch.setattr(atrest, "QUIET", 0.0)


def take(queue, targets, journal=None):
    """Take as broadcast mode does: the take is journaled on its own, and each
    launch would be recorded apart (so an unlaunched job goes back on recovery)."""
    return Records(queue, journal, broadcast=True).take(targets, ok)


def make(tmp_path, text):
    path = tmp_path / "queue.yaml"
    if text is not None:
        path.write_text(text)
    return QueueFile(str(path)), path


def commands(taken):
    return [(j.command, j.params) for j in taken.jobs]


def test_pop_keeps_the_rest_byte_for_byte(tmp_path):
    rest = ("# about two\n- command: echo {{ a }}   # trailing\n  a: [1, 2]\n\n"
            "-   echo 'three'  # odd spacing\n")
    q, path = make(tmp_path, "# my queue\n- echo one  # first\n" + rest)
    assert commands(take(q, ["[n]"])) == [("echo one", ())]
    assert path.read_text() == "# my queue\n" + rest


def test_expanded_entry_leaves_canonical_rest_at_the_head(tmp_path):
    q, path = make(tmp_path, "- command:\n    - echo {{ a }} {{ b }}\n  a: [1, 2]\n"
                             "  b: [no, 0x10]\n- tail\n")
    taken = take(q, ["[n]"])
    assert commands(taken) == [("echo {{ a }} {{ b }}", (("a", "1"), ("b", "no")))]
    left = [i.value for i in read_all(path.read_text(), "q")[1]]
    assert left == [{"command": "echo {{ a }} {{ b }}", "a": "1", "b": "0x10"},
                    {"command": "echo {{ a }} {{ b }}", "a": "2", "b": "no"},
                    {"command": "echo {{ a }} {{ b }}", "a": "2", "b": "0x10"},
                    "tail"]
    assert path.read_text().endswith("- tail\n")


def test_batch_pop_takes_across_entries(tmp_path):
    q, path = make(tmp_path, "- a\n- command: b{{x}}\n  x: [1, 2, 3]\n- c\n")
    taken = take(q, ["[1]", "[2]", "[3]"])
    assert commands(taken) == [("a", ()), ("b{{x}}", (("x", "1"),)), ("b{{x}}", (("x", "2"),))]
    assert [i.value for i in read_all(path.read_text(), "q")[1]] == [
        {"command": "b{{x}}", "x": "3"}, "c"]


def test_the_quiz_expands_to_nine_jobs(tmp_path):
    q, _ = make(tmp_path, """\
- echo hi from {{ hostname }}
- command:
    - for i in $(seq {{ low }} {{ high }}); do echo $i; sleep {{ laziness }}; done
    - echo bye from {{ hostname }}
  low:
    - 1
    - 2
  high:
    - 3
    - 4
""")
    assert q.check_all(ok) == (2, 9)
    jobs = []
    while True:
        taken = take(q, ["[n]"])
        if not taken.jobs:
            break
        jobs += taken.jobs
    assert len(jobs) == 9 and len(set(jobs)) == 9


@pytest.mark.parametrize("text", [None, "", "[]\n", "# nothing\n"])
def test_empty_or_missing_queue(tmp_path, text):
    q, path = make(tmp_path, text)
    assert take(q, ["[n]"]).jobs == ()
    assert q.check_all(ok) == (0, 0)
    assert not (tmp_path / "consumed.yaml").exists()


def test_consumed_is_canonical_and_tail_reruns_the_last_job(tmp_path):
    q, path = make(tmp_path, "- echo 'it''s' \"$HOME\"\n- command: run {{bs}}\n  bs: [8]\n")
    take(q, ["[node-1]"])
    take(q, ["[node-2]"])
    consumed = (tmp_path / "consumed.yaml").read_text()
    entries = yaml.safe_load(consumed)
    assert entries == [{"command": "echo 'it''s' \"$HOME\""}, {"command": "run {{bs}}", "bs": "8"}]
    assert "for [node-1]" in consumed
    # the README's trick: the last two lines re-run the last one-line job
    (tmp_path / "again").mkdir()
    q2, path2 = make(tmp_path / "again", None)
    path2.write_text("".join(consumed.splitlines(True)[:2]))
    assert commands(take(q2, ["[n]"])) == [("echo 'it''s' \"$HOME\"", ())]


def test_flow_style_list_falls_back_to_a_full_rewrite(tmp_path):
    q, path = make(tmp_path, "[a, {command: 'b{{x}}', x: [1, 2]}, c]\n")
    assert commands(take(q, ["[n]", "[m]"])) == [("a", ()), ("b{{x}}", (("x", "1"),))]
    assert [i.value for i in read_all(path.read_text(), "q")[1]] == [
        {"command": "b{{x}}", "x": "2"}, "c"]


def test_bad_head_entry_takes_nothing(tmp_path):
    text = "- nocommand: x\n- b\n"
    q, path = make(tmp_path, text)
    with pytest.raises(InputError) as err:
        take(q, ["[n]"])
    assert "queue.yaml:1 (entry 1)" in str(err.value) and "'command'" in str(err.value)
    assert path.read_text() == text
    assert not (tmp_path / "consumed.yaml").exists()


def test_bad_entry_after_good_ones_stops_the_batch_there(tmp_path):
    q, path = make(tmp_path, "- a\n- b: 1\n- c\n")
    taken = take(q, ["[1]", "[2]", "[3]"])
    assert commands(taken) == [("a", ())]
    assert taken.error is not None and "entry 2" in str(taken.error)
    assert path.read_text() == "- b: 1\n- c\n"


def test_check_failure_keeps_the_entry(tmp_path):
    def refuse(job):
        raise InputError("unknown name 'dir'")
    q, path = make(tmp_path, "- rm -rf /data/{{dir}}\n")
    with pytest.raises(InputError, match="unknown name 'dir'"):
        Records(q).take(["[n]"], refuse)
    assert path.read_text() == "- rm -rf /data/{{dir}}\n"


def test_check_all_finds_errors_anywhere(tmp_path):
    q, _ = make(tmp_path, "- a\n- b\n- command: [x\n")
    with pytest.raises(InputError, match="syntax"):
        q.check_all(ok)


def test_indented_list_keeps_its_indentation(tmp_path):
    q, path = make(tmp_path, "  - command: e{{x}}\n    x: [1, 2]\n  - z\n")
    take(q, ["[n]"])
    assert path.read_text() == "  - command: e{{x}}\n    x: '2'\n  - z\n"


def test_not_utf8_is_an_input_error(tmp_path):
    path = tmp_path / "queue.yaml"
    path.write_bytes(b"- echo \xff\n")
    with pytest.raises(InputError, match="UTF-8"):
        take(QueueFile(str(path)), ["[n]"])


def test_directory_is_an_input_error(tmp_path):
    (tmp_path / "queue.yaml").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        take(QueueFile(str(tmp_path / "queue.yaml")), ["[n]"])


def test_lock_is_a_sidecar_and_waits_for_its_holder(tmp_path):
    waits = []
    q, path = make(tmp_path, "- a\n")
    q = QueueFile(str(path), wait=waits.append)
    fd = os.open(q.lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    calls = []

    def wait(seconds):
        calls.append(seconds)
        if len(calls) == 3:
            os.close(fd)  # the other holder lets go
    q = QueueFile(str(path), wait=wait)
    assert commands(take(q, ["[n]"])) == [("a", ())]
    assert len(calls) == 3
    assert os.path.exists(q.lock_path)  # never deleted


def test_rewrite_is_atomic_and_keeps_the_mode(tmp_path):
    q, path = make(tmp_path, "- a\n- b\n")
    os.chmod(path, 0o640)
    inode = os.stat(path).st_ino
    take(q, ["[n]"])
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert os.stat(path).st_ino != inode  # replaced, not rewritten in place
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".partial")]


def test_planted_symlink_for_the_partial_file_is_not_followed(tmp_path):
    q, path = make(tmp_path, "- a\n- b\n")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.symlink(victim, q.new_partial())
    take(q, ["[n]"])
    assert victim.read_text() == "precious\n"
    assert path.read_text() == "- b\n"


def test_pop_cost_does_not_parse_the_tail(tmp_path):
    # a syntax error far down the file does not stop taking the head
    q, path = make(tmp_path, "- a\n" + "- x\n" * 1000 + "- [broken\n")
    assert commands(take(q, ["[n]"])) == [("a", ())]


# ---------------------------------------------------------------- a symlinked queue file

def linked_queue(tmp_path, text):
    """Folder a/ whose queue.yaml is a link to b/jobs.yaml; returns (a, b, link)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (b / "jobs.yaml").write_text(text)
    link = a / "queue.yaml"
    os.symlink(os.path.join("..", "b", "jobs.yaml"), str(link))
    return a, b, link


def test_a_symlinked_queue_file_is_worked_on_at_its_target(tmp_path):
    a, b, link = linked_queue(tmp_path, "- one\n- two\n")
    queue = QueueFile(str(link))
    assert queue.path == str(b / "jobs.yaml")
    assert queue.lock_path == str(b / ".jobs.yaml.lock")
    assert queue.consumed_path == str(b / "consumed.yaml")
    assert queue.interrupted_path == str(b / "interrupted.yaml")
    assert os.path.dirname(queue.new_partial()) == str(b)
    assert commands(take(queue, ["n"])) == [("one", ())]
    assert os.path.islink(str(link))
    assert link.read_text() == "- two\n"
    assert sorted(os.listdir(str(a))) == ["queue.yaml"]


def test_two_runs_through_a_link_and_at_its_target_run_every_entry_once(tmp_path):
    """One ``pegasus q`` in a/ (its queue.yaml a link) and one in b/, at once."""
    import subprocess
    import sys

    log = tmp_path / "ran.log"
    ids = ["id%d" % i for i in range(6)]
    a, b, link = linked_queue(tmp_path, "".join(
        "- sleep 0.3; echo %s >> %s\n" % (i, log) for i in ids))
    for folder in (a, b):
        (folder / "hosts.yaml").write_text("- localhost\n")
    runs = [subprocess.Popen([sys.executable, "-m", "pegasus", "q", "-Q", queue],
                             cwd=str(folder), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for folder, queue in ((a, "queue.yaml"), (b, "jobs.yaml"))]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert sorted(log.read_text().split()) == ids, outputs  # each exactly once
    assert all(out.count("=== run") for out in outputs), "both runs took entries"
    assert os.path.islink(str(link)) and os.readlink(str(link)) == "../b/jobs.yaml"
    assert yaml.safe_load(link.read_text()) is None
    assert len(yaml.safe_load((b / "consumed.yaml").read_text())) == 6
    assert not (a / "consumed.yaml").exists()


# ---------------------------------------------------------------- hard links

def test_a_hard_linked_queue_file_is_refused_before_anything_runs(tmp_path):
    """Two names, one file (``ln``): two Pegasus, one through each name, would run
    entries twice once a rewrite parts the names."""
    from helpers import run_in_process

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "queue.yaml").write_text("- echo one\n- echo two\n")
    os.link(str(a / "queue.yaml"), str(b / "queue.yaml"))
    (b / "hosts.yaml").write_text("- localhost\n")
    res = run_in_process(["q"], b)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith("pegasus: queue.yaml: this file has 2 names (hard links)")
    assert "ln -s" in res.stderr and "Traceback" not in res.stderr
    assert "=== run" not in res.stdout
    assert (b / "queue.yaml").read_text() == "- echo one\n- echo two\n"
    assert not (b / "consumed.yaml").exists()


def test_a_hard_link_made_while_pegasus_runs_stops_the_next_take(tmp_path):
    from fakes import FakeJob, release, run_loop, when_started

    def link(fake):
        os.link(fake.queue_path, str(tmp_path / "other-name.yaml"))
    out = run_loop(tmp_path, queue=["a", "b"], scripts={"a": FakeJob(hang=True)},
                   actions=[when_started("a", link, release("a"))])
    assert out.status == 2, out.output
    assert [job.command for job in out.jobs] == ["a"]
    assert any("this file has 2 names (hard links)" in m for m in out.messages), out.output
    assert out.queue == ["b"]


def test_an_append_cut_short_by_a_full_disk_is_taken_back(tmp_path):
    """consumed.yaml (and the other record files) never end in half an entry that
    the next append would run into: a write cut short leaves the file as it was.
    RLIMIT_FSIZE cuts the write as a full disk does, without root."""
    path = tmp_path / "consumed.yaml"
    path.write_text("- echo a  # taken\n")
    code = ("import resource, sys\n"
            "from pegasus.queuefile import append\n"
            "from pegasus.errors import PegasusError\n"
            "path = sys.argv[1]\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (len(open(path).read()) + 5,) * 2)\n"
            "try:\n"
            "    append(path, '- echo a long second entry  # taken\\n')\n"
            "except PegasusError as err:\n"
            "    print(err)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=60)
    assert str(path) in done.stdout, done.stdout + done.stderr
    assert path.read_text() == "- echo a  # taken\n"
