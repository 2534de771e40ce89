"""A large queue: the start-up check and each take read what they need only.

The check streams the file (memory bounded by one entry and a chunk, not the
file); a take reads and parses the head, and the rewrite copies the rest of
the file byte for byte in chunks. Reading in chunks must change nothing: the
same entries, the same errors, the same file after a take, wherever the
chunks end.
"""

import errno
import io
import os
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pegasus import atrest, yamltree
from pegasus.errors import InputError, PegasusError
from pegasus.queuefile import QueueFile
from pegasus.records import Records
from pegasus.yamltree import TextStream, read_all

ENTRIES = 200_000  # 6 MB: a take's copy holds about 1.3 MB at its peak
# 1.5 MB: ten times what the check's streamed read holds at its peak (~140 KB,
# whatever the size), where reading the file whole held about twenty times the file.
CHECKED = 50_000


def ok(job):
    return None


@pytest.fixture(autouse=True)
def _files_at_rest(monkeypatch):
    """These tests take from files they have just written, as if written long ago
    (the wait for a file to rest has its own tests: test_queue_whole.py)."""
    monkeypatch.setattr(atrest, "QUIET", 0.0)


def big_queue(path, entries=ENTRIES, tail=b""):
    data = "".join(f"- echo job {i}  # note {i}\n" for i in range(entries)).encode()
    path.write_bytes(data + tail)
    return len(data) + len(tail)


def peak_bytes(fn):
    """Peak of Python's allocations while fn runs (tracemalloc)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------- memory

def test_check_all_memory_is_bounded_by_an_entry_not_the_file(tmp_path):
    path = tmp_path / "queue.yaml"
    size = big_queue(path, CHECKED)
    queue = QueueFile(str(path))
    counts = []
    peak = peak_bytes(lambda: counts.append(queue.check_all(ok)))
    assert counts == [(CHECKED, CHECKED)]
    # Reading the whole file and building every entry took about 20 times its size.
    assert peak < size / 4, f"peak {peak} bytes for a {size}-byte queue"


def test_a_take_reads_the_head_and_copies_the_rest(tmp_path):
    path = tmp_path / "queue.yaml"
    size = big_queue(path, tail=b"- 'not UTF-8 here: \xff'\n")
    before = path.read_bytes()
    records = Records(QueueFile(str(path)))
    taken = []
    peak = peak_bytes(lambda: taken.append(records.take(["[n]"], ok)))
    assert [j.command for j in taken[0].jobs] == ["echo job 0"]
    first = len(b"- echo job 0  # note 0\n")
    assert path.read_bytes() == before[first:]  # the bad byte far down is never read
    assert peak < size / 3, f"peak {peak} bytes for a {size}-byte queue"


def test_put_back_inserts_at_the_head_and_copies_the_rest(tmp_path):
    path = tmp_path / "queue.yaml"
    size = big_queue(path)
    before = path.read_bytes()
    queue = QueueFile(str(path))
    peak = peak_bytes(lambda: queue.insert_head([{"command": "again"}]))
    assert path.read_bytes() == b"- command: again\n" + before
    assert peak < size / 3, f"peak {peak} bytes for a {size}-byte queue"


# ---------------------------------------------------------------- the head changed under us

def test_a_head_rewritten_between_pop_and_cut_is_refused(tmp_path):
    path = tmp_path / "queue.yaml"
    path.write_text("- a\n- b\n")
    queue = QueueFile(str(path))
    with queue.locked():
        popped = queue.pop(1, ok)
        path.write_text("- x\n- a\n- b\n")  # a writer that ignores the lock
        with pytest.raises(PegasusError, match="changed while Pegasus"):
            queue.cut(popped)
    assert path.read_text() == "- x\n- a\n- b\n"


def test_an_entry_appended_between_pop_and_cut_is_kept(tmp_path):
    path = tmp_path / "queue.yaml"
    path.write_text("- a\n- b\n")
    queue = QueueFile(str(path))
    popped = queue.pop(1, ok)
    with open(path, "a") as f:
        f.write("- c\n")
    queue.cut(popped)
    assert path.read_text() == "- b\n- c\n"


# ---------------------------------------------------------------- chunks change nothing

TOKENS = ["- ", "-", ": ", "\n", "\n- ", "  ", "    ", "[", "]", "{", "}", ", ", "'",
          '"', "# ", "&a ", "*a", "|\n", ">-\n", "command", "x", "y", "{{x}}", "~",
          "\u00e9", "\u20ac", "\U0001f600", "\r\n", "x: [1, 2]", "\n  x: [1, 2]"]
queues = st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=3)),
                  max_size=40).map("".join)
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


def outcome(fn):
    try:
        return fn()
    except PegasusError as err:
        return ("error", str(err))


def same_or_later_bad_character(chunked, whole):
    """The same outcome; or a character YAML forbids, which libyaml finds as
    far as it has read ahead: in the whole text at once, in a stream only when
    it gets there (then another error, or none for a take of the head)."""
    if chunked == whole:
        return True
    return whole[0] == "error" and "YAML does not allow" in whole[1]


@FUZZ
@given(text=queues, chunk=st.integers(1, 9))
def test_reading_in_chunks_gives_the_same_entries_and_errors(text, chunk):
    def chunked():
        stream = TextStream(io.BytesIO(text.encode("utf-8")), "q")
        stream.CHUNK = chunk
        return read_all(stream, "q")
    assert same_or_later_bad_character(outcome(chunked), outcome(lambda: read_all(text, "q")))


def take_outcome(tmp_path, text, want, chunk, monkeypatch):
    monkeypatch.setattr(TextStream, "CHUNK", chunk)
    folder = tmp_path / str(chunk)
    folder.mkdir(exist_ok=True)
    path = folder / "queue.yaml"
    path.write_bytes(text.encode("utf-8"))
    records = Records(QueueFile(str(path)))
    taken = outcome(lambda: records.take(["[n]"] * want, ok))
    if isinstance(taken, tuple):
        taken = ("error", taken[1].replace(str(folder), "FOLDER"))
    else:
        taken = (taken.jobs, taken.error and str(taken.error).replace(str(folder), "FOLDER"))
    return taken, path.read_bytes()


@FUZZ
@given(text=queues, want=st.integers(1, 3), chunk=st.integers(1, 9))
def test_a_take_in_chunks_leaves_the_same_file(tmp_path, monkeypatch, text, want, chunk):
    whole = take_outcome(tmp_path, text, want, 1 << 20, monkeypatch)
    chunked = take_outcome(tmp_path, text, want, chunk, monkeypatch)
    if chunked != whole:
        assert same_or_later_bad_character(chunked[0], whole[0]), (chunked, whole)


BREAKS = "\x85\u2028\u2029\r"  # line breaks to YAML, not to an editor
BLOCK = "|\n  "  # a block scalar's start: its text on the next line
listed = st.lists(st.tuples(st.sampled_from(["'", '"', "", BLOCK]),
                            st.text(alphabet="ab #:-" + BREAKS, max_size=6),
                            st.sampled_from(["\n"] * 4 + list(BREAKS))),  # the entry's end
                  min_size=1, max_size=5).map(
    lambda entries: "".join("- " + q + t + ("" if q == BLOCK else q) + end
                            for q, t, end in entries))


@FUZZ
@given(text=st.one_of(listed, st.lists(st.one_of(st.sampled_from(TOKENS + list(BREAKS)),
                                                 st.text(max_size=3)),
                                       max_size=40).map("".join)),
       want=st.integers(1, 3))
def test_what_a_take_leaves_is_the_rest_of_the_list(tmp_path, monkeypatch, text, want):
    """Whatever a take took, the file then holds the entries after them, each as
    it was: no entry lost or cut (a NEL once made a take cut the next entry)."""
    try:
        _, before = read_all(text, "q")
    except PegasusError:
        return  # a file the start check refuses
    (jobs, error), after = take_outcome(tmp_path, text, want, 1 << 20, monkeypatch)
    if jobs == "error" or not jobs:
        return
    try:
        _, rest = read_all(after.decode("utf-8"), "q")
    except PegasusError as err:
        raise AssertionError(f"the take left a file that does not parse: {err}; {after!r}")
    values = [item.value for item in before]
    assert [item.value for item in rest] == values[len(values) - len(rest):], (text, after)
    assert len(rest) < len(values)


@pytest.mark.parametrize("chunk", [3, 1 << 20])
def test_a_take_refuses_an_entry_whose_last_line_goes_on(tmp_path, monkeypatch, chunk):
    """``- --`` then ``  x: [1, 2]``: a plain scalar "-- x", then a ':' YAML
    refuses. Read whole, the take ran "-- x" and dropped ``: [1, 2]`` with its
    line; read in chunks it said the file changed while rewriting (a fuzz find).
    Both now name the syntax error, and the queue is left as it was."""
    text = "- -- \n  x: [1, 2]\n- echo next\n"
    taken, after = take_outcome(tmp_path, text, 1, chunk, monkeypatch)
    assert taken == ("error", "FOLDER/queue.yaml:2 (entry 1): YAML syntax error: mapping "
                     "values are not allowed in this context; fix the file and run again")
    assert after == text.encode()


@pytest.mark.parametrize("chunk", [2, 1 << 20])
@pytest.mark.parametrize("text", [
    "- echo a\x85- echo b\n- echo c\n", "- a\u2028- b\n", "- a # x\x85- b\n",
    "- |\n  a\x85- b\n", "- 'q' \x85- b\n", "- echo a\r- echo b\r- echo c\r",
    "- echo 'a\x85b'\n- echo c\n- echo d\n"])
def test_entries_on_one_editor_line_are_refused_not_cut(tmp_path, monkeypatch, chunk, text):
    """Two entries on one line as an editor counts lines (a NEL, LS, PS or lone CR
    between them: old Mac files end every line with a CR): the take cut the line,
    and the second entry was gone without running (the adversarial review's find).
    Now the take names the line, and the queue stays as it was."""
    taken, after = take_outcome(tmp_path, text, 1, chunk, monkeypatch)
    assert taken[0] == "error", taken
    assert taken[1].startswith("FOLDER/queue.yaml:"), taken
    assert after == text.encode("utf-8")


@pytest.mark.parametrize("chunk", [1, 2, 3, 1 << 20])
@pytest.mark.parametrize("text, left", [
    ("- 'echo a\x85b'\n- echo c\n- echo d\n", "- echo c\n- echo d\n"),
    ('- "echo a\u2028b"\n- echo c\n- echo d\n', "- echo c\n- echo d\n"),
    ("- 'echo a\rb'\n- echo c\n- echo d\n", "- echo c\n- echo d\n"),
    ("- |\n  echo a\x85\n  b\n- echo c\n", "- echo c\n"),
    ("- echo a\n- echo \u2029 c\n", "- echo \u2029 c\n"),
    ("- 'x\r\n  y'\r\n- echo c\r\n", "- echo c\r\n"),
], ids=["NEL", "LS", "lone-CR", "NEL-in-block", "PS-in-next", "CRLF"])
def test_a_take_cuts_the_lines_an_editor_sees(tmp_path, monkeypatch, chunk, text, left):
    """YAML also breaks lines at NEL, LS, PS and a lone CR; the take cuts the
    file's lines by newline. A NEL in the first entry made the take also cut the
    second entry's line: a job gone from the queue without ever running."""
    (taken, _), after = take_outcome(tmp_path, text, 1, chunk, monkeypatch)
    assert len(taken) == 1
    assert after.decode("utf-8") == left


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64 * 1024])
def test_not_utf8_names_its_line_whatever_the_chunks(chunk):
    for data, line in [(b"- a\n- \xff\n", 2), (b"- \xc3\xa9\n# \xc3\n- x\n", 2),
                       (b"- a\n\n- b\xe2\x82\n", 3), (b"\xff", 1)]:
        stream = TextStream(io.BytesIO(data), "q")
        stream.CHUNK = chunk
        with pytest.raises(InputError) as err:
            yamltree.read_all(stream, "q")
        assert str(err.value).startswith(f"q:{line}: is not UTF-8 text"), str(err.value)


@pytest.mark.parametrize("refuse_after", [0, 1])
def test_the_copy_is_done_by_hand_where_the_kernel_refuses(tmp_path, monkeypatch, refuse_after):
    path = tmp_path / "queue.yaml"
    big_queue(path, entries=100_000)  # a few MiB: several copy_file_range calls
    before = path.read_bytes()
    real, calls = os.copy_file_range, []

    def copy_file_range(*args):
        calls.append(args)
        if len(calls) > refuse_after:
            raise OSError(errno.EXDEV, "refused")
        return real(*args)

    monkeypatch.setattr(os, "copy_file_range", copy_file_range)
    Records(QueueFile(str(path))).take(["[n]"], ok)
    assert path.read_bytes() == before[len(b"- echo job 0  # note 0\n"):]
    assert len(calls) == refuse_after + 1


def test_a_syntax_error_is_placed_on_the_line_an_editor_shows_whatever_the_chunks():
    """YAML also breaks lines at U+0085 (NEL); an editor, and the line numbers
    Pegasus gives, break them at newlines only. Found by the fuzz test above: the
    whole text said line 2, a stream line 1 or 2 by its chunk size."""
    text = "- \x850\x850\n- "  # one line for an editor, then '- '
    said = {outcome(lambda: read_all(text, "q"))[1][:4]}
    for chunk in range(1, 10):
        stream = TextStream(io.BytesIO(text.encode("utf-8")), "q")
        stream.CHUNK = chunk
        said.add(outcome(lambda: read_all(stream, "q"))[1][:4])
    assert said == {"q:1 "}


@FUZZ
@given(text=st.text(alphabet="a-\n\r\x85\u2028 ", max_size=30), chunk=st.integers(1, 5))
def test_the_breaks_only_yaml_counts_are_found_across_chunk_edges(text, chunk):
    """A CR at a chunk's end is alone or the first half of a CRLF: decided by the
    next chunk (or the file's end), as in the text read whole."""
    stream = TextStream(io.BytesIO(text.encode("utf-8")), "q")
    stream.CHUNK = chunk
    while stream.read():
        pass
    stream.read()  # again at the end: nothing more, nothing twice
    assert stream.yaml_only == [i for i, c in enumerate(text) if c in "\x85\u2028\u2029"
                                or c == "\r" and text[i + 1:i + 2] != "\n"]
