"""Bad input: one clear message, exit status 2, nothing consumed, nothing run.

Every test runs ``pegasus q`` on ``localhost`` sub-nodes (no SSH): most
through ``cli.main`` in this process (``run_in_process``), a few as the real
command (``run_pegasus``).
The queue always holds valid entries that would create a marker file if they
ran, so "nothing ran" is checked by the marker's absence; "nothing consumed"
by the queue being byte for byte unchanged and no consumed.yaml.

Pegasus validates the whole queue at start (outside daemon mode), so a bad
entry that is not the first one (entry 2 of 2, entry 3 of 5) stops it before
anything runs too.

The expected message is ``pegasus: <file>:<line> (entry N): <what>`` on
stderr; syntax-level problems found before an entry is known (a YAML syntax
error, bytes that are not UTF-8) give ``<file>:<line>: <what>``.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from pegasus import expand
from pegasus.errors import PegasusError
from pegasus.queuefile import QueueFile
from pegasus.records import Records

from helpers import written_long_ago

WHERE = re.compile(r"^pegasus: (?P<file>[^\n:]+?):(?P<line>\d+)"
                   r"(?: \(entry (?P<entry>\d+)\))?: (?P<what>.+)")
BIG = ", ".join(str(i) for i in range(1000))  # 4 of these: 10^12 combinations


# ---------------------------------------------------------------- helpers

def write(path, data):
    with open(str(path), "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def read_bytes(path):
    with open(str(path), "rb") as f:
        return f.read()


class Work:
    """A folder with hosts.yaml, queue.yaml and the marker good entries make."""

    def __init__(self, folder):
        self.folder = folder
        self.marker = folder / "marker"
        self.data = folder / "data"  # what an `rm -rf data/{{dir}}` would hit
        self.data.mkdir()
        (self.data / "keep").write_text("keep\n")

    def good(self, n):
        return "".join("- touch %s\n" % self.marker for _ in range(n))

    def setup(self, hosts, queue):
        if hosts is not None:
            write(self.folder / "hosts.yaml", hosts)
        if queue is not None:
            write(self.folder / "queue.yaml", queue)
            written_long_ago(self.folder / "queue.yaml")
        self.queue_before = read_bytes(self.folder / "queue.yaml") \
            if os.path.isfile(str(self.folder / "queue.yaml")) else None

    def assert_nothing_happened(self, res):
        out = res.stdout + res.stderr
        assert "Traceback" not in out, out
        assert "=== run" not in res.stdout, "a job was started:\n" + out
        assert not self.marker.exists(), (
            "the marker was made (a job ran, or a template ran Python):\n" + out)
        assert not (self.folder / "consumed.yaml").exists(), (
            "consumed.yaml was written:\n" + read_bytes(self.folder / "consumed.yaml").decode())
        if self.queue_before is not None:
            assert read_bytes(self.folder / "queue.yaml") == self.queue_before, \
                "queue.yaml was changed"
        assert (self.data / "keep").exists(), "data/ was removed"


@pytest.fixture
def work(tmp_path):
    return Work(tmp_path)


def first_line(res):
    assert res.stderr.startswith("pegasus: "), "no 'pegasus: ' message on stderr:\n" \
        + res.stderr
    return res.stderr.splitlines()[0]


def assert_where(res, file, line, entry):
    """The first stderr line names file:line (entry N); entry None: not required."""
    head = first_line(res)
    m = WHERE.match(head)
    assert m, "message does not start with '<file>:<line>': %r" % head
    assert m["file"] == file, head
    assert int(m["line"]) == line, head
    if entry is not None:
        assert m["entry"] is not None and int(m["entry"]) == entry, \
            "message does not name the entry as '(entry %d)': %r" % (entry, head)
    return head


# ---------------------------------------------------------------- bad queue entries

def _tag_entry(w):
    return '- !!python/object/apply:os.system ["touch %s"]\n' % w.marker


def _nested_tag_entry(w):
    return '- command: !!python/object/apply:os.system ["touch %s"]\n' % w.marker


def _injection(w):
    # pybars pastes a subexpression's name into the Python it generates, in
    # double quotes: a '"' in a [...] segment there would run Python.
    return ('- echo {{lower ([x"+str(open("%s","w"))+"] y)}}\n' % w.marker)


# (id, entry text (str, bytes, or a function of Work), line offset of the
#  error within the entry, words the message must hold, entry number required)
QUEUE_CASES = [
    ("yaml-syntax-error", "- echo a: b: c\n", 0, ["YAML syntax error", "fix"], False),
    ("no-command-key", "- cmd: touch {m}\n  x: '1'\n", 0,
     ["no 'command' key", "add one"], True),
    ("duplicate-key", "- command: touch {m} {{x}}\n  x: a\n  x: b\n", 2,
     ["duplicate key 'x'"], True),
    ("python-tag", _tag_entry, 0, ["tag", "not allowed"], True),
    ("python-tag-in-a-value", _nested_tag_entry, 0, ["tag", "not allowed"], True),
    ("undefined-name", "- rm -rf {d}/{{dir}}\n", 0, ["unknown name 'dir'"], True),
    ("empty-value", "- command: rm -rf {d}/{{dir}}\n  dir: ''\n", 0,
     ["'dir'", "empty value"], True),
    ("empty-list", "- command: rm -rf {d}/{{dir}}\n  dir: []\n", 0,
     ["'dir'", "empty list"], True),
    ("empty-command", "- ''\n", 0, ["empty"], True),
    ("not-a-command", "- [touch, {m}]\n", 0, ["'command'"], True),
    ("unclosed-braces", "- rm -rf {d}/{{dir\n", 0, ["unclosed '{{'"], True),
    ("unclosed-block", "- command: touch {m}{{#if x}}\n  x: a\n", 0,
     ["never closed"], True),
    ("unknown-helper", "- command: touch {m}{{frobnicate x}}\n  x: a\n", 0,
     ["unknown helper 'frobnicate'"], True),
    ("product-beyond-limit",
     "- command: echo {{a}}{{b}}{{c}}{{d}}\n"
     "  a: [%s]\n  b: [%s]\n  c: [%s]\n  d: [%s]\n" % (BIG, BIG, BIG, BIG), 0,
     [str(10 ** 12), str(expand.MAX_JOBS_PER_ENTRY), "split"], True),
    ("not-utf-8", b"- echo caf\xe9\n", 0, ["UTF-8"], False),
    ("bracket-segment-code-injection", _injection, 0, [], True),
    ("partial-with-backslash", "- echo {{> a\\}}\n", 0, [], True),
    # issue 10 §5: pybars' own helpers are unknown helpers, not empty text
    ("each-block", "- rm -rf {d}/{{#each dir}}{{this}}{{/each}}\n", 0,
     ["unknown helper 'each'", "helpers: replace"], True),
    ("helper-missing", "- command: rm -rf {d}/{{helperMissing dir}}\n  dir: x\n", 0,
     ["unknown helper 'helperMissing'"], True),
    ("lookup", "- command: rm -rf {d}/{{lookup dir 'a'}}\n  dir: x\n", 0,
     ["unknown helper 'lookup'"], True),
    ("with-block", "- command: rm -rf {d}/{{#with dir}}{{this}}{{/with}}\n  dir: x\n", 0,
     ["unknown helper 'with'"], True),
    ("if-block", "- command: rm -rf {d}/{{#if dir}}{{dir}}{{/if}}\n  dir: x\n", 0,
     ["unknown helper 'if'"], True),
    ("unless-block", "- command: rm -rf {d}/{{#unless dir}}x{{/unless}}\n  dir: x\n", 0,
     ["unknown helper 'unless'"], True),
    ("block-helper-missing", "- command: rm -rf {d}/{{blockHelperMissing dir}}\n  dir: x\n",
     0, ["unknown helper 'blockHelperMissing'"], True),
    ("log", "- command: rm -rf {d}/{{log dir}}\n  dir: x\n", 0,
     ["unknown helper 'log'"], True),
    ("section", "- command: rm -rf {d}/{{#dir}}{{this}}{{/dir}}\n  dir: x\n", 0,
     ["unknown helper 'dir'"], True),
    ("space-value", "- command: rm -rf {d}/{{dir}}\n  dir: ' '\n", 0,
     ["'dir' has a value of only whitespace (' ')"], True),
    ("tab-value", "- command: rm -rf {d}/{{dir}}\n  dir: \"\\t\"\n", 0,
     ["'dir' has a value of only whitespace ('\\t')"], True),
    # issue 10 §5: a NUL is refused, never dropped (over SSH 'a\0b' ran as 'ab')
    ("nul-in-command", "- \"touch {m}\\0x\"\n", 0,
     ["command holds a NUL character", "a command cannot carry it"], True),
    ("nul-in-value", "- command: touch {m}{{x}}\n  x: \"\\0\"\n", 0,
     ["'x' holds a NUL character"], True),
    ("deeply-nested-entry", "- " + "{a: " * 600 + "b" + "}" * 600 + "\n", 0, [], False),
    # review of issue 10: a helper that gives an empty value is refused like an empty value
    ("replace-to-nothing", "- command: rm -rf {d}/{{replace dir dir \"\"}}\n"
     "  dir: models\n", 0,
     ["helper 'replace' gives an empty value", "rm -rf /data/"], True),
    ("replace-the-value-to-nothing", "- command: rm -rf {d}/{{replace dir \"a\" \"\"}}\n"
     "  dir: a\n", 0, ["helper 'replace' gives an empty value (from 'a', 'a', '')"], True),
    ("trim-to-nothing", "- command: rm -rf {d}/{{trim (replace dir \"a\" \" \")}}\n"
     "  dir: a\n", 0, ["helper 'replace' gives an empty value"], True),
    ("snake-case-to-nothing", "- command: rm -rf {d}/{{snakeCase dir}}\n  dir: '--'\n", 0,
     ["helper 'snakeCase' gives an empty value (from '--')"], True),
    ("shq-of-nothing", "- rm -rf {d}/{{shq \"\"}}\n", 0,
     ["helper 'shq' gives an empty value"], True),
]

POSITIONS = [  # (id, good entries before the bad one, good entries after it)
    ("entry-2-of-2", 1, 0),
    ("entry-3-of-5", 2, 2),
]


def _entry_text(case, w):
    text = case(w) if callable(case) else case
    if isinstance(text, str):
        text = text.replace("{m}", str(w.marker)).replace("{d}", str(w.data))
    return text


@pytest.mark.parametrize("pos_id,before,after", POSITIONS, ids=[p[0] for p in POSITIONS])
@pytest.mark.parametrize("case_id,entry,offset,words,entry_required", QUEUE_CASES,
                         ids=[c[0] for c in QUEUE_CASES])
def test_bad_queue_entry_stops_pegasus_before_anything_runs(
        work, run_in_process, pos_id, before, after, case_id, entry, offset, words,
        entry_required):
    bad = _entry_text(entry, work)
    bad = bad if isinstance(bad, bytes) else bad.encode("utf-8")
    queue = work.good(before).encode() + bad + work.good(after).encode()
    work.setup("- localhost\n", queue)

    res = run_in_process(["q"], work.folder, timeout=60)

    assert res.returncode == 2, res.stdout + res.stderr
    work.assert_nothing_happened(res)
    head = assert_where(res, "queue.yaml", before + 1 + offset,
                        before + 1 if entry_required else None)
    for word in words:
        assert word in res.stderr, "%r not in the message:\n%s" % (word, res.stderr)
    assert len(head) > len("pegasus: queue.yaml:1: ")


def test_undefined_name_never_runs_with_the_name_left_out(work, run_in_process):
    # `rm -rf data/{{dir}}` must not run as `rm -rf data/`.
    work.setup("- localhost\n", "- rm -rf %s/{{dir}}\n- rm -rf %s/{{ dir }}\n"
               % (work.data, work.data))

    res = run_in_process(["q"], work.folder)

    assert res.returncode == 2, res.stdout + res.stderr
    assert (work.data / "keep").read_text() == "keep\n"
    work.assert_nothing_happened(res)


def test_name_defined_on_some_sub_nodes_only_is_refused(work, run_in_process):
    work.setup("- localhost\n- hostname: localhost\n  dir: sub\n",
               "- touch %s\n- rm -rf %s/{{dir}}\n" % (work.marker, work.data))

    res = run_in_process(["q"], work.folder)

    assert res.returncode == 2, res.stdout + res.stderr
    work.assert_nothing_happened(res)
    assert_where(res, "queue.yaml", 2, 2)
    assert "unknown name 'dir'" in res.stderr


def test_a_helper_empty_with_a_sub_node_value_fails_the_job_and_runs_nothing(work,
                                                                           run_in_process):
    """A sub-node's values are placeholders at the check: the job is refused as it
    renders there, a failed job that never ran, not `rm -rf data/`."""
    work.setup("- hostname: localhost\n  dir: a\n",
               '- rm -rf %s/{{replace dir "a" ""}}\n' % work.data)

    res = run_in_process(["q"], work.folder)

    assert res.returncode == 1, res.stdout + res.stderr
    assert "=== run" not in res.stdout and "Traceback" not in res.stderr
    assert "not rendered: helper 'replace' gives an empty value (from 'a', 'a', '')" \
        in res.stdout + res.stderr
    assert (work.data / "keep").read_text() == "keep\n"


def test_the_queue_is_named_as_given_on_the_command_line(work, run_pegasus):
    (work.folder / "jobs").mkdir()
    write(work.folder / "hosts.yaml", "- localhost\n")
    write(work.folder / "jobs" / "my-queue.yaml",
          "- touch %s\n- echo {{nope}}\n" % work.marker)
    before = read_bytes(work.folder / "jobs" / "my-queue.yaml")

    res = run_pegasus(["q", "-Q", "jobs/my-queue.yaml"], work.folder)

    assert res.returncode == 2, res.stdout + res.stderr
    assert_where(res, "jobs/my-queue.yaml", 2, 2)
    assert read_bytes(work.folder / "jobs" / "my-queue.yaml") == before
    assert not (work.folder / "jobs" / "consumed.yaml").exists()
    assert not work.marker.exists()


# ---------------------------------------------------------------- bad hosts entries

HOST_CASES = [
    ("no-hostname-key", "- name: node-1\n", 0, ["no 'hostname' key", "add one"], True),
    ("hostname-renders-empty", '- hostname: \'{{replace h "x" ""}}\'\n  h: x\n', 0, ["empty"],
     True),
    ("host-value-only-whitespace", '- hostname: "{{h}}"\n  h: " "\n', 0,
     ["'h' has a value of only whitespace"], True),
    ("hostname-is-blank", '- " "\n', 0, ["empty"], True),
    ("hostname-starts-with-dash", "- -oProxyCommand=touch {m}\n", 0,
     ["starts with '-'"], True),
    ("hostname-renders-with-dash",
     '- hostname: "{{h}}"\n  h: "-oProxyCommand=touch {m}"\n', 0, ["starts with '-'"], True),
    ("hostname-undefined-name", '- hostname: "node-{{rack}}"\n', 0,
     ["unknown name 'rack'"], True),
    ("hostname-unclosed-braces", '- hostname: "node-{{rack"\n  rack: a\n', 0,
     ["unclosed '{{'"], True),
    ("hostname-unknown-helper", '- hostname: "{{frob h}}"\n  h: localhost\n', 0,
     ["unknown helper 'frob'"], True),
    ("host-empty-value", "- hostname: localhost\n  gpu: ''\n", 0,
     ["'gpu'", "empty value"], True),
    ("host-not-a-mapping", "- [localhost, localhost]\n", 0, ["'hostname'"], True),
    ("host-product-beyond-limit",
     "- hostname: localhost\n  a: [%s]\n  b: [%s]\n  c: [%s]\n  d: [%s]\n"
     % (BIG, BIG, BIG, BIG), 0, [str(10 ** 12), str(expand.MAX_JOBS_PER_ENTRY)], True),
    ("host-yaml-syntax-error", "- local: host: x\n", 0, ["YAML syntax error"], False),
    ("host-duplicate-key", "- hostname: localhost\n  hostname: localhost\n", 1,
     ["duplicate key 'hostname'"], True),
    ("host-python-tag", '- !!python/object/apply:os.system ["touch {m}"]\n', 0,
     ["tag", "not allowed"], True),
    ("host-bracket-segment-code-injection",
     '- hostname: \'{{lower ([x"+str(open("{m}","w"))+"] h)}}\'\n  h: localhost\n', 0,
     [], True),
    ("host-not-utf-8", b"- caf\xe9\n", 0, ["UTF-8"], False),
]


@pytest.mark.parametrize("pos_id,before,after", POSITIONS, ids=[p[0] for p in POSITIONS])
@pytest.mark.parametrize("case_id,entry,offset,words,entry_required", HOST_CASES,
                         ids=[c[0] for c in HOST_CASES])
def test_bad_hosts_entry_stops_pegasus_before_anything_runs(
        work, run_in_process, pos_id, before, after, case_id, entry, offset, words,
        entry_required):
    bad = entry if isinstance(entry, bytes) else \
        entry.replace("{m}", str(work.marker)).encode("utf-8")
    hosts = b"- localhost\n" * before + bad + b"- localhost\n" * after
    work.setup(hosts, work.good(3))

    res = run_in_process(["q"], work.folder, timeout=60)

    assert res.returncode == 2, res.stdout + res.stderr
    work.assert_nothing_happened(res)
    assert_where(res, "hosts.yaml", before + 1 + offset,
                 before + 1 if entry_required else None)
    for word in words:
        assert word in res.stderr, "%r not in the message:\n%s" % (word, res.stderr)


@pytest.mark.parametrize("hosts", ["", "\n", "# no hosts yet\n", "[]\n", "~\n"],
                         ids=["empty", "blank-line", "only-a-comment", "empty-list", "null"])
def test_empty_hosts_file(work, run_in_process, hosts):
    work.setup(hosts, work.good(2))

    res = run_in_process(["q"], work.folder)

    assert res.returncode == 2, res.stdout + res.stderr
    work.assert_nothing_happened(res)
    head = first_line(res)
    assert head.startswith("pegasus: hosts.yaml: "), head
    assert "no hosts" in head and "add at least one" in head, head


def test_missing_hosts_file(work, run_in_process):
    work.setup(None, work.good(2))

    res = run_in_process(["q"], work.folder)

    assert res.returncode == 2, res.stdout + res.stderr
    work.assert_nothing_happened(res)
    assert first_line(res).startswith("pegasus: hosts.yaml: not found"), res.stderr
    assert "--hosts-file" in res.stderr  # what to do
    assert not (work.folder / "hosts.yaml").exists()


def test_missing_hosts_file_given_with_an_option(work, run_in_process):
    work.setup(None, work.good(2))

    res = run_in_process(["q", "-H", "cluster/hosts.yaml"], work.folder)

    assert res.returncode == 2, res.stdout + res.stderr
    work.assert_nothing_happened(res)
    assert first_line(res).startswith("pegasus: cluster/hosts.yaml: not found"), res.stderr


@pytest.mark.parametrize("line", ['- echo "tab:\tend"\n', '- echo "a: b"\n'],
                         ids=["colon-tab", "colon-space"])
def test_a_command_that_yaml_reads_as_a_mapping_gets_a_hint(work, run_in_process, line):
    work.setup("- localhost\n", work.good(1) + line)

    res = run_in_process(["q"], work.folder)

    assert res.returncode == 2, res.stdout + res.stderr
    work.assert_nothing_happened(res)
    head = first_line(res)
    assert head.startswith("pegasus: queue.yaml:2 (entry 2): this entry has no "
                           "'command' key"), head
    assert "quote it" in head, head


@pytest.mark.parametrize("end", ["\n", ""], ids=["newline", "no-newline"])
def test_a_syntax_error_at_the_end_names_the_last_line(work, run_in_process, end):
    """libyaml puts the mark after the last newline: no line 4 in a 3-line file."""
    work.setup("- localhost\n", work.good(2) + "- [a, b" + end)

    res = run_in_process(["q"], work.folder)

    assert res.returncode == 2, res.stdout + res.stderr
    work.assert_nothing_happened(res)
    assert first_line(res).startswith("pegasus: queue.yaml:3 (entry 3): YAML syntax "
                                      "error"), res.stderr


def test_a_missing_queue_file_is_an_empty_queue_and_pegasus_says_so(work, run_pegasus):
    """A typo in -Q must not pass silently as a finished queue."""
    work.setup("- localhost\n", work.good(2))

    res = run_pegasus(["q", "-Q", "typo.yaml"], work.folder)

    assert res.returncode == 0, res.stdout + res.stderr
    said = res.stdout + res.stderr
    assert "pegasus: typo.yaml does not exist: an empty queue" in said, said
    assert "no jobs ran" in said
    assert not (work.folder / "typo.yaml").exists()


def test_hosts_file_that_is_a_directory(work, run_in_process):
    work.setup(None, work.good(2))
    (work.folder / "hosts.yaml").mkdir()

    res = run_in_process(["q"], work.folder)

    assert res.returncode == 2, res.stdout + res.stderr
    work.assert_nothing_happened(res)
    assert first_line(res).startswith("pegasus: hosts.yaml: "), res.stderr
    assert "directory" in res.stderr


# ---------------------------------------------------------------- queue files that cannot be used

def test_queue_file_that_is_a_directory(work, run_in_process):
    work.setup("- localhost\n", None)
    (work.folder / "queue.yaml").mkdir()

    res = run_in_process(["q"], work.folder)

    assert res.returncode == 2, res.stdout + res.stderr
    work.assert_nothing_happened(res)
    assert first_line(res).startswith("pegasus: queue.yaml: "), res.stderr
    assert "directory" in first_line(res)
    assert os.listdir(str(work.folder / "queue.yaml")) == []


def test_queue_whose_folder_is_a_file(work, run_in_process):
    work.setup("- localhost\n", None)
    write(work.folder / "notdir", "- touch %s\n" % work.marker)
    before = read_bytes(work.folder / "notdir")

    res = run_in_process(["q", "-Q", "notdir/queue.yaml"], work.folder)

    assert res.returncode == 2, res.stdout + res.stderr
    work.assert_nothing_happened(res)
    assert "notdir" in first_line(res), res.stderr
    assert read_bytes(work.folder / "notdir") == before


def test_queue_whose_folder_does_not_exist(work, run_in_process):
    work.setup("- localhost\n", None)

    res = run_in_process(["q", "-Q", "nosuch/queue.yaml"], work.folder)

    assert res.returncode == 2, res.stdout + res.stderr
    work.assert_nothing_happened(res)
    assert "nosuch" in first_line(res), res.stderr
    assert not (work.folder / "nosuch").exists()


@pytest.mark.parametrize("folder", ["missing", "a-file"])
def test_queuefile_unit_with_an_unusable_folder(tmp_path, folder):
    # The unit under the CLI: a clean PegasusError, nothing created.
    if folder == "a-file":
        write(tmp_path / "q", "- echo hi\n")
    queue = QueueFile(str(tmp_path / "q" / "queue.yaml"))

    with pytest.raises(PegasusError) as err:
        queue.check_all(lambda job: None)
    assert str(tmp_path / "q") in str(err.value)
    with pytest.raises(PegasusError):
        Records(queue).take(["[localhost]"], lambda job: None)
    assert sorted(os.listdir(str(tmp_path))) == ([] if folder == "missing" else ["q"])


def _can_unshare():
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"):
        return False
    res = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return res.returncode == 0


@pytest.mark.sshd  # root
def test_queue_on_a_read_only_mount(work):
    """As root, permissions do not stop writes: a read-only bind mount does."""
    if not _can_unshare():
        pytest.skip("needs root and unshare -m for a private read-only bind mount")
    ro = work.folder / "ro"
    ro.mkdir()
    write(work.folder / "hosts.yaml", "- localhost\n")
    write(ro / "queue.yaml", "- touch %s\n- touch %s\n" % (work.marker, work.marker))
    write(ro / ".queue.yaml.lock", "")  # even an existing lock file cannot be opened rw
    before = read_bytes(ro / "queue.yaml")
    script = 'mount --bind -o ro "$1" "$1" && exec "$2" -m pegasus q -Q "$1/queue.yaml"'

    res = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(ro),
                          sys.executable], cwd=str(work.folder), capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)

    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert first_line(res).startswith("pegasus: "), res.stderr
    assert "queue.yaml" in first_line(res)
    assert read_bytes(ro / "queue.yaml") == before
    assert not (ro / "consumed.yaml").exists()
    assert not work.marker.exists()


@pytest.mark.sshd  # root
def test_queue_in_an_immutable_folder_is_refused_at_the_first_write(work, run_pegasus):
    """The lock file can be opened, but no file can be created beside the queue."""
    if os.geteuid() != 0 or not shutil.which("chattr"):
        pytest.skip("needs root and chattr")
    work.setup("- localhost\n", "- touch %s\n- touch %s\n" % (work.marker, work.marker))
    write(work.folder / ".queue.yaml.lock", "")
    made = subprocess.run(["chattr", "+i", str(work.folder)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("this file system has no immutable flag: " + made.stderr.decode())
    try:
        res = run_pegasus(["q"], work.folder)
    finally:
        subprocess.run(["chattr", "-i", str(work.folder)], check=True)

    assert res.returncode == 2, res.stdout + res.stderr
    work.assert_nothing_happened(res)
    head = first_line(res)
    # Whichever file it fails to make first (the rewritten queue, a journal...)
    # is named, with the reason.
    assert "queue.yaml" in head, head
    assert "not permitted" in head, head


def test_a_directory_where_temporary_files_go_does_not_stop_pegasus(work, run_pegasus):
    """Every rewrite writes its own temporary file (``.queue.yaml.partial-<random>``):
    something planted at the old fixed name neither blocks nor confuses it."""
    work.setup("- localhost\n", "- touch %s\n" % work.marker)
    (work.folder / ".queue.yaml.partial" / "x").mkdir(parents=True)

    res = run_pegasus(["q"], work.folder)

    assert res.returncode == 0, res.stdout + res.stderr
    assert os.path.exists(work.marker)
    assert (work.folder / ".queue.yaml.partial" / "x").is_dir()
