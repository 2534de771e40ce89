"""Tests for pegasus.output: the line splitter and the output sink."""

from __future__ import annotations

import io
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from pegasus.model import Job, Result, SubNode
from pegasus.lines import LineSplitter, ProgressFilter
from pegasus.output import Sink, StepTable, one_line, wrap_text

from helpers import examples

ESC = b"\x1b["
N1 = SubNode(1, "node-1")
N2 = SubNode(2, "node-1", (("container", "gpu0"),))


def split_all(chunks, max_line=65536):
    s = LineSplitter(max_line)
    out = []
    for c in chunks:
        out.extend(s.feed(c))
    out.extend(s.close())
    return out


# -- LineSplitter ---------------------------------------------------------


def test_newlines():
    assert split_all([b"a\nbb\nccc\n"]) == [b"a", b"bb", b"ccc"]


def test_carriage_return_ends_a_line():
    assert split_all([b"10%\r20%\r30%\rdone\n"]) == [b"10%", b"20%", b"30%", b"done"]


def test_crlf_is_one_terminator():
    assert split_all([b"a\r\nb\r\n"]) == [b"a", b"b"]


def test_crlf_split_across_chunks():
    s = LineSplitter()
    assert s.feed(b"a\r") == [b"a"]  # emitted at once, the \n is expected
    assert s.feed(b"\nb\r") == [b"b"]
    assert s.feed(b"") == []  # an empty chunk does not forget the \r
    assert s.feed(b"\n") == []
    assert s.feed(b"\n") == [b""]  # a second \n is an empty line
    assert s.close() == []


def test_cr_then_cr_is_two_lines():
    assert split_all([b"a\r", b"\rb\n"]) == [b"a", b"", b"b"]


def test_no_trailing_newline():
    s = LineSplitter()
    assert s.feed(b"a\nb") == [b"a"]
    assert s.feed(b"c") == []
    assert s.close() == [b"bc"]
    assert s.close() == []


def test_line_completed_across_chunks():
    assert split_all([b"he", b"llo", b" world\nx", b"y\n"]) == [b"hello world", b"xy"]


def test_empty_lines_preserved():
    assert split_all([b"a\n\nb\n"]) == [b"a", b"", b"b"]
    assert split_all([b"\n", b"\n"]) == [b"", b""]


def test_empty_input():
    assert split_all([]) == []
    assert split_all([b"", b""]) == []


def test_long_line_in_one_chunk_comes_in_pieces():
    assert split_all([b"abcdefghij\nxy\n"], max_line=4) == [
        b"abcd", b"efgh", b"ij", b"xy"]


def test_long_line_exact_multiple_gives_no_empty_piece():
    assert split_all([b"abcdefgh\n"], max_line=4) == [b"abcd", b"efgh"]
    assert split_all([b"ab", b"cd", b"ef", b"gh", b"\n"], max_line=4) == [b"abcd", b"efgh"]


def test_long_unterminated_line_keeps_buffer_bounded():
    s = LineSplitter(max_line=10)
    out = []
    for _ in range(100):
        out.extend(s.feed(b"x" * 7))
        assert s.buffered <= 10
    out.extend(s.close())
    assert all(len(p) <= 10 for p in out)
    assert b"".join(out) == b"x" * 700
    assert all(len(p) == 10 for p in out)


def test_buffer_bounded_on_a_huge_line_fed_in_chunks():
    """Linear-time guard: the held bytes never grow past max_line, so each
    feed does at most O(max_line + chunk) work whatever was fed before."""
    s = LineSplitter(max_line=1000)
    chunk = b"y" * 333
    emitted = 0
    for _ in range(3000):
        emitted += sum(map(len, s.feed(chunk)))
        assert s.buffered <= s.max_line
        assert len(s._held) <= 4  # never a growing list of fragments
    emitted += sum(map(len, s.close()))
    assert emitted == 333 * 3000


def test_unicode_bytes_pass_through():
    data = "héllo ✓\nwörld".encode()
    assert split_all([data[:2], data[2:]]) == [b"h\xc3\xa9llo \xe2\x9c\x93", "wörld".encode()]


chunks_st = st.lists(
    st.binary(max_size=20) | st.sampled_from([b"\r", b"\n", b"\r\n", b"a\r", b"\nb"]),
    max_size=30)


@settings(max_examples=examples(300))
@given(chunks_st)
def test_property_matches_splitlines_of_whole(chunks):
    data = b"".join(chunks)
    lines = split_all(chunks)
    assert lines == data.splitlines()
    assert b"".join(lines) == re.sub(rb"\r\n|\r|\n", b"", data)


@settings(max_examples=examples(300))
@given(chunks_st, st.integers(min_value=1, max_value=8))
def test_property_small_max_line(chunks, max_line):
    data = b"".join(chunks)
    s = LineSplitter(max_line)
    pieces = []
    for c in chunks:
        pieces.extend(s.feed(c))
        assert s.buffered <= max_line
    pieces.extend(s.close())
    assert all(len(p) <= max_line for p in pieces)
    assert b"".join(pieces) == re.sub(rb"\r\n|\r|\n", b"", data)
    # each line of the whole is its pieces, in order
    expected = [line[i:i + max_line] for line in data.splitlines()
                for i in range(0, max(len(line), 1), max_line)]
    assert pieces == expected


@settings(max_examples=examples(300))
@given(chunks_st, st.integers(min_value=1, max_value=8))
def test_property_feed_block_cuts_as_feed_does(chunks, max_line):
    """The fast path (whole lines as one block, else ``feed``) gives the lines
    ``feed`` alone gives, whatever the chunks and the bound."""
    s = LineSplitter(max_line)
    lines = []
    for c in chunks:
        block = s.feed_block(c)
        if block is None:
            lines.extend(s.feed(c))
        elif block:
            assert block.endswith(b"\n") and s.cr_ended is None
            lines.extend(block[:-1].split(b"\n"))
        assert s.buffered <= max_line
    lines.extend(s.close())
    assert lines == split_all(chunks, max_line)


def test_feed_block_takes_the_common_chunk_and_holds_the_partial_line():
    s = LineSplitter()
    assert s.feed_block(b"ab") is None  # no newline: feed
    assert s.feed(b"ab") == []
    assert s.feed_block(b"c\n\nde") == b"abc\n\n"
    assert s.feed_block(b"f\n") == b"def\n"
    assert s.feed_block(b"g\r\n") is None  # a \r: feed
    assert s.close() == []


# -- Sink -------------------------------------------------------------------


class Stream(io.BytesIO):
    def __init__(self, tty=False):
        super().__init__()
        self.tty = tty
        self.writes = 0

    def isatty(self):
        return self.tty

    def write(self, data):
        self.writes += 1
        return super().write(data)


def pipe_sink(period=1):
    out = Stream()
    return Sink(out, color=False, width=None, print_period=period), out


def test_prefix_is_label_and_space():
    sink, out = pipe_sink()
    sink.lines(N1, "stdout", [b"hello", b"world"])
    sink.lines(N2, "stderr", [b"oops"])
    assert out.getvalue() == (b"[node-1] hello\n[node-1] world\n"
                              b"[node-1 (container=gpu0)] oops\n")


def test_one_write_per_call():
    sink, out = pipe_sink()
    sink.lines(N1, "stdout", [b"a", b"b", b"c"])
    assert out.writes == 1


def test_pipe_passes_bytes_unchanged():
    sink, out = pipe_sink()
    raw = b"\xff\xfe bad utf-8 \x1b[31mred\x1b[0m " + b"z" * 500
    sink.lines(N1, "stdout", [raw, b""])
    assert out.getvalue() == b"[node-1] " + raw + b"\n[node-1] \n"


def test_block_prefixes_every_line_in_one_write():
    sink, out = pipe_sink()
    raw = b"\xff\xfe bad utf-8 \x1b[31mred\x1b[0m"
    sink.block(N1, "stdout", b"a\n\n" + raw + b"\n")
    assert out.getvalue() == b"[node-1] a\n[node-1] \n[node-1] " + raw + b"\n"
    assert out.writes == 1


def test_block_prints_as_lines_does_whatever_the_sink():
    block = b"first\n" + b"x" * 150 + b"\n\nlast\n"
    for make in (lambda s: Sink(s, color=True, width=None),
                 lambda s: Sink(s, color=True, width=40),
                 lambda s: Sink(s, color=False, width=None, print_period=2),
                 lambda s: Sink(s, color=False, width=None, print_period=0)):
        by_block, by_lines = Stream(), Stream()
        make(by_block).block(N2, "stderr", block)
        make(by_lines).lines(N2, "stderr", block[:-1].split(b"\n"))
        assert by_block.getvalue() == by_lines.getvalue()


def test_no_lines_writes_nothing():
    sink, out = pipe_sink()
    sink.lines(N1, "stdout", [])
    assert out.getvalue() == b"" and out.writes == 0


def test_no_color_in_a_pipe():
    sink = Sink.for_terminal(Stream(tty=False), environ={"TERM": "xterm"})
    assert not sink.color and sink.width is None
    sink.lines(N1, "stdout", [b"x"])
    sink.job_started(N1, "ls")
    sink.message("hi")
    assert ESC not in sink.outlet.stream.getvalue()


def test_color_on_a_terminal():
    sink = Sink.for_terminal(Stream(tty=True), environ={"TERM": "xterm", "COLUMNS": "100"})
    assert sink.color and sink.width == 100


def test_no_color_env_disables_even_empty():
    for value in ("1", ""):
        env = {"TERM": "xterm", "NO_COLOR": value, "COLUMNS": "80"}
        sink = Sink.for_terminal(Stream(tty=True), environ=env)
        assert not sink.color
        assert sink.width == 80  # still a terminal: still wrapped


def test_a_terminal_that_says_it_has_no_size_is_taken_as_80_columns():
    """A pty nobody sized (docker exec -t, CI runners) reports 0 x 0: lines were
    cut every 20 columns. 80, as shutil and most tools assume."""
    import os
    import pty
    master, slave = pty.openpty()  # a new pty's size is 0 x 0
    try:
        with open(slave, "wb", closefd=False) as stream:
            sink = Sink.for_terminal(stream, environ={"TERM": "xterm"})
            assert sink.width == 80
    finally:
        os.close(master)
        os.close(slave)


def test_dumb_terminal_has_no_color():
    sink = Sink.for_terminal(Stream(tty=True), environ={"TERM": "dumb", "COLUMNS": "80"})
    assert not sink.color


def test_color_codes_present_and_distinct_per_node():
    out = Stream()
    sink = Sink(out, color=True, width=None)
    sink.lines(N1, "stdout", [b"a"])
    sink.lines(N2, "stderr", [b"b"])
    first, second = out.getvalue().splitlines()
    assert first == b"\x1b[0m\x1b[32m[node-1]\x1b[0m a"
    assert second == b"\x1b[0m\x1b[33m[node-1 (container=gpu0)]\x1b[0m b"


def test_palette_wraps_around():
    out = Stream()
    sink = Sink(out, color=True, width=None)
    sink.lines(SubNode(0, "a"), "stdout", [b"x"])
    sink.lines(SubNode(12, "b"), "stdout", [b"x"])
    a, b = out.getvalue().splitlines()
    assert a[:9] == b[:9] == b"\x1b[0m\x1b[31m"


def test_print_period_zero_prints_no_job_output_but_frames():
    sink, out = pipe_sink(period=0)
    sink.job_started(N1, "ls")
    sink.lines(N1, "stdout", [b"a", b"b"])
    sink.job_done(N1, Result(N1, Job("ls"), "ls", exit_status=0))
    sink.message("note")
    assert out.getvalue() == (b"[node-1] === run 'ls' ===\n"
                              b"[node-1] === done (exit 0) ===\n"
                              b"pegasus: note\n")


def test_print_period_one_prints_all():
    sink, out = pipe_sink(period=1)
    sink.lines(N1, "stdout", [b"%d" % i for i in range(5)])
    assert out.getvalue().count(b"\n") == 5


def test_print_period_three_counts_per_node_across_calls():
    sink, out = pipe_sink(period=3)
    sink.job_started(N1, "seq")
    sink.lines(N1, "stdout", [b"1", b"2"])
    sink.lines(N2, "stdout", [b"a", b"b", b"c", b"d"])
    sink.lines(N1, "stdout", [b"3", b"4", b"5"])
    sink.lines(N1, "stderr", [b"6", b"7", b"8"])
    got = out.getvalue().splitlines()[1:]
    assert [l for l in got if l.startswith(b"[node-1] ")] == [
        b"[node-1] 1", b"[node-1] 4", b"[node-1] 7"]
    assert [l for l in got if l.startswith(b"[node-1 (")] == [
        b"[node-1 (container=gpu0)] a", b"[node-1 (container=gpu0)] d"]


def test_print_period_resets_at_job_started():
    sink, out = pipe_sink(period=3)
    sink.lines(N1, "stdout", [b"1", b"2"])
    sink.job_started(N1, "again")
    sink.lines(N1, "stdout", [b"x", b"y"])
    assert out.getvalue() == b"[node-1] 1\n[node-1] === run 'again' ===\n[node-1] x\n"


def test_wrapping_repeats_the_prefix():
    out = Stream()
    sink = Sink(out, color=False, width=9 + 20)  # "[node-1] " is 9 wide
    sink.lines(N1, "stdout", [b"a" * 45, b"short"])
    assert out.getvalue() == (b"[node-1] " + b"a" * 20 + b"\n"
                              b"[node-1] " + b"a" * 20 + b"\n"
                              b"[node-1] " + b"a" * 5 + b"\n"
                              b"[node-1] short\n")
    assert out.writes == 1


def test_wrapping_counts_characters_not_bytes():
    out = Stream()
    sink = Sink(out, color=False, width=9 + 20)
    line = "é" * 25
    sink.lines(N1, "stdout", [line.encode()])
    assert out.getvalue().decode().splitlines() == [
        "[node-1] " + "é" * 20, "[node-1] " + "é" * 5]


def test_wrapping_with_color_keeps_prefix_whole():
    out = Stream()
    sink = Sink(out, color=True, width=9 + 20)
    sink.lines(N1, "stdout", [b"b" * 30])
    prefix = b"\x1b[0m\x1b[32m[node-1]\x1b[0m "
    assert out.getvalue() == prefix + b"b" * 20 + b"\n" + prefix + b"b" * 10 + b"\n"


def test_no_wrapping_without_width():
    sink, out = pipe_sink()
    sink.lines(N1, "stdout", [b"a" * 1000])
    assert out.getvalue() == b"[node-1] " + b"a" * 1000 + b"\n"


def test_wrap_text_never_cuts_escape_sequences():
    text = "ab\x1b[31mcdef\x1b[0mgh"
    pieces = wrap_text(text, 3)
    assert "".join(pieces) == text
    assert pieces == ["ab\x1b[31mc", "def\x1b[0m", "gh"]
    assert wrap_text("", 5) == [""]
    assert wrap_text("abc\x1b[0m", 3) == ["abc\x1b[0m"]


def test_frames():
    sink, out = pipe_sink()
    sink.job_started(N2, "echo hi\necho there")
    sink.job_done(N2, Result(N2, Job("x"), "x", exit_status=3))
    sink.job_done(N1, Result(N1, Job("x"), "x", error="connection lost"))
    assert out.getvalue() == (
        b"[node-1 (container=gpu0)] === run 'echo hi\\necho there' ===\n"
        b"[node-1 (container=gpu0)] === done (exit 3) ===\n"
        b"[node-1] === done (connection lost) ===\n")


def test_message_lines_are_tagged():
    sink, out = pipe_sink()
    sink.message("one\ntwo")
    assert out.getvalue() == b"pegasus: one\npegasus: two\n"


def results(*outcomes):
    made = []
    for i, (status, error) in enumerate(outcomes):
        node = SubNode(i, f"node-{i}")
        made.append(Result(node, Job("cmd"), f"cmd {i}", exit_status=status, error=error))
    return made


def test_summary_all_succeeded():
    sink, out = pipe_sink()
    sink.summary(results(*[(0, None)] * 9))
    assert out.getvalue() == b"pegasus: 9 jobs, all succeeded\n"


def test_summary_one_job():
    sink, out = pipe_sink()
    sink.summary(results((0, None)))
    assert out.getvalue() == b"pegasus: 1 job, all succeeded\n"


def test_summary_lists_failures():
    sink, out = pipe_sink()
    sink.summary(results((0, None), (2, None), (None, "host unreachable"), (0, None)),
                 extra="interrupted by Ctrl-c")
    assert out.getvalue().decode() == (
        "pegasus: 4 jobs, 2 failed:\n"
        "pegasus:   [node-1] 'cmd 1' (exit 2)\n"
        "pegasus:   [node-2] 'cmd 2' (host unreachable)\n"
        "pegasus: interrupted by Ctrl-c\n")
    assert out.writes == 1


def test_summary_shortens_long_commands_on_one_line():
    node = SubNode(0, "n")
    long = "for i in 1 2 3; do\n  echo $i\ndone; " + "x" * 200
    sink, out = pipe_sink()
    sink.summary([Result(node, Job(long), long, exit_status=1)])
    row = out.getvalue().decode().splitlines()[1]
    shown = row.split("'")[1]
    assert len(shown) == 80 and shown.endswith("\u2026")
    assert shown.startswith("for i in 1 2 3; do\\n  echo $i\\ndone; ")


def test_summary_no_jobs():
    sink, out = pipe_sink()
    sink.summary([])
    assert out.getvalue() == b"pegasus: no jobs ran\n"


def test_one_line():
    assert one_line("a\r\nb") == "a\\r\\nb"
    assert one_line("abcdef", 4) == "abc\u2026"
    assert one_line("abcd", 4) == "abcd"


# ---------------------------------------------------------------- broadcast reports

def _results(statuses):
    from pegasus.model import Job, Result, SubNode
    job = Job("echo {{hostname}}")
    return [Result(SubNode(i, f"n{i}"), job, f"echo n{i}", exit_status=s)
            for i, s in enumerate(statuses)]


def test_step_report_names_failed_sub_nodes_only():
    out = io.BytesIO()
    Sink(out, color=False, width=None).step_report(2, _results([0, 1, 0, 255]))
    text = out.getvalue().decode()
    assert "step 2 'echo {{hostname}}': 2 of 4 sub-nodes failed:" in text
    assert "[n1] exit 1" in text and "[n3] exit 255" in text and "[n0]" not in text


def test_step_report_all_ok_is_one_line():
    out = io.BytesIO()
    Sink(out, color=False, width=None).step_report(1, _results([0, 0]))
    assert out.getvalue().decode() == "pegasus: step 1 'echo {{hostname}}': all 2 sub-nodes succeeded\n"


def test_broadcast_summary_counts_ok_and_lists_failures_per_step():
    out = io.BytesIO()
    table = StepTable()
    table.add(_results([0] * 64))
    table.add(_results([0] * 63 + [2]))
    Sink(out, color=False, width=None).broadcast_summary(table, "interrupted by Ctrl-c")
    lines = out.getvalue().decode().splitlines()
    assert lines[0] == "pegasus: 2 steps, 1 with failures:"
    assert lines[1].endswith("step 1 'echo {{hostname}}': 64 ok")
    assert lines[2].endswith("step 2 'echo {{hostname}}': 63 ok, 1 failed: [n63] exit 2")
    assert lines[3] == "pegasus: interrupted by Ctrl-c"


def test_broadcast_summary_keeps_failed_steps_and_counts_the_others_when_many():
    table = StepTable(ok_rows=3)
    for step in range(1, 1001):
        table.add(_results([0, 7] if step in (2, 500) else [0, 0]))
    assert len(table.rows) == 2  # memory stays flat: only the failed steps' rows
    out = io.BytesIO()
    Sink(out, color=False, width=None).broadcast_summary(table)
    lines = out.getvalue().decode().splitlines()
    assert lines[0] == "pegasus: 1000 steps, 2 with failures:"
    assert lines[1].endswith("step 2 'echo {{hostname}}': 1 ok, 1 failed: [n1] exit 7")
    assert lines[2].endswith("step 500 'echo {{hostname}}': 1 ok, 1 failed: [n1] exit 7")
    assert lines[3] == "pegasus:   and 998 other steps that succeeded on every sub-node"


def test_broadcast_summary_stays_flat_with_a_sub_node_left_out_for_many_steps():
    nodes = [SubNode(0, "n0"), SubNode(1, "n1")]
    table = StepTable(ok_rows=3)
    table.add(_results([0, 0]), nodes)
    table.leave_out(nodes[1], "connection lost", in_step=False)
    for step in range(2, 1001):
        table.add(_results([7] if step == 500 else [0]), nodes)
    assert len(table.rows) == 4  # step 1, steps 2-499, step 500, steps 501-1000
    out = io.BytesIO()
    Sink(out, color=False, width=None).broadcast_summary(table)
    lines = out.getvalue().decode().splitlines()
    assert lines[0] == "pegasus: 1000 steps, 1 with failures, 999 not run on every sub-node:"
    assert lines[2] == ("pegasus:   steps 2-499 ('echo n0' ... 'echo n0'): 1 ok each; "
                        "not run on [n1] (connection lost after step 1)")
    assert lines[3] == ("pegasus:   step 500 'echo n0': 0 ok, 1 failed: [n0] exit 7; "
                        "not run on [n1] (connection lost after step 1)")
    assert lines[4].startswith("pegasus:   steps 501-1000 ")


def test_broadcast_summary_lists_every_step_while_few():
    table = StepTable(ok_rows=3)
    for status in (0, 0, 1, 0):
        table.add(_results([status]))
    out = io.BytesIO()
    Sink(out, color=False, width=None).broadcast_summary(table)
    assert [line.split("'")[0] for line in out.getvalue().decode().splitlines()[1:]] == [
        "pegasus:   step 1 ", "pegasus:   step 2 ", "pegasus:   step 3 ", "pegasus:   step 4 "]


def test_summary_counts_jobs_it_was_not_given():
    out = io.BytesIO()
    Sink(out, color=False, width=None).summary(_results([3]), total=1000)
    lines = out.getvalue().decode().splitlines()
    assert lines[0] == "pegasus: 1000 jobs, 1 failed:"
    out = io.BytesIO()
    Sink(out, color=False, width=None).summary([], total=5)
    assert out.getvalue().decode() == "pegasus: 5 jobs, all succeeded\n"


# ---------------------------------------------------------------- progress bars (issue 10)

class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def progress_run(chunks_at):
    """Feed (time, chunk) pairs through a splitter and a filter; the lines shown."""
    clock, splitter = Clock(), LineSplitter()
    shown_filter = ProgressFilter(every=2.0, clock=clock)
    shown = []
    for at, chunk in chunks_at:
        clock.now = at
        shown += shown_filter.pick(splitter.feed(chunk), splitter.cr_ended)
    shown += shown_filter.pick(splitter.close(), None) or shown_filter.close()
    return shown


def test_progress_updates_show_at_most_every_2_s_and_the_final_state_always():
    ticks = [(i * 0.1, b"\r%3d%%" % i) for i in range(101)]  # tqdm: \r before each state
    shown = progress_run(ticks + [(10.1, b"\n"), (10.2, b"after\n")])
    assert shown[0] == b"  0%"  # the first update at once
    assert shown[-2:] == [b"100%", b"after"]  # the final state, then the rest
    assert len(shown) == 1 + 4 + 1 + 1  # 0%, one every 2 s after it, 100%, after: not 101
    assert all(b"%" in line for line in shown[:-1])


def test_a_held_update_is_shown_when_the_job_ends_without_a_newline():
    assert progress_run([(0, b"10%\r"), (0.5, b"50%\r"), (1.0, b"90%\r")]) == [b"10%", b"90%"]


def test_lines_ending_in_newline_are_never_held():
    lines = [(i * 0.01, b"line %d\r\n" % i) for i in range(50)]
    assert progress_run(lines) == [b"line %d" % i for i in range(50)]
