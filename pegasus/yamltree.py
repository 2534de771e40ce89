"""Read a YAML list into plain values exactly as the user typed them.

Every scalar stays the string that was typed (YAML 1.1 would turn ``no``,
``0x10`` or ``1:30`` into other values); a duplicate key, an unknown tag or a
second document is an error. Entries are read lazily, one at a time, with the
lines they span, so the queue file can take its head entry without parsing
the rest of the file; from a ``TextStream`` the file itself is read lazily
too, a chunk at a time, so memory is bounded by the largest entry. This
module only reads: it never writes a file.
"""

from __future__ import annotations

import bisect
import codecs
import re
from dataclasses import dataclass
from typing import BinaryIO, Iterator, List, Optional, Tuple, Union

import yaml

from pegasus.errors import RUN_AGAIN, InputError

try:  # libyaml is ~10x faster; both give the same events
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - pure-Python PyYAML
    _Loader = yaml.SafeLoader

Value = Union[str, list, dict]

MAX_DEPTH = 50  # lists and mappings nested deeper than this are refused
# Line breaks YAML counts and an editor (and Pegasus's line edits) does not:
# NEL, LS, PS, and a CR without its LF (at a chunk's end: decided by the next).
_YAML_ONLY_BREAK = re.compile("[\x85\u2028\u2029]|\r(?!\n)")


def _yaml_only_breaks(text: str, offset: int, final: bool = True) -> List[int]:
    """Indexes (from ``offset``) of ``text``'s characters that only YAML counts as
    line breaks; not ``final``: a CR at the very end is left to the caller (the
    next chunk may start with its LF)."""
    found = [offset + m.start() for m in _YAML_ONLY_BREAK.finditer(text)]
    if not final and found and found[-1] == offset + len(text) - 1 and text.endswith("\r"):
        found.pop()
    return found

_PLAIN_TAGS = frozenset("tag:yaml.org,2002:" + t for t in
                        ("str", "int", "float", "bool", "null", "seq", "map"))


@dataclass(frozen=True)
class Item:
    """One entry of the top-level list and the lines it spans (0-based)."""

    value: Value
    first_line: int  # line of the entry's first content
    last_line: int  # last line holding any of its content


@dataclass(frozen=True)
class Layout:
    """How the top-level list is written."""

    block: bool  # a block list (``- entry`` lines), not ``[a, b]``
    column: int  # column of its ``-`` indicators
    empty: bool  # no list at all (empty file, only comments, ``~``)


class BadText(InputError):
    """Not UTF-8, or a character YAML forbids: found where a chunk is read, not in
    an entry (so no entry number)."""


class TextStream:
    """A UTF-8 file read a chunk at a time, for the YAML reader.

    Checks the encoding as it goes (InputError naming the line), counts the
    lines read, and with ``keep`` keeps the text read (the head of the file).
    """

    CHUNK = 64 * 1024

    def __init__(self, binary: BinaryIO, path: str, keep: bool = False):
        self.path, self._file = path, binary
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._kept: Optional[List[str]] = [] if keep else None
        self.newlines = 0  # newline characters read so far
        self.eof = False
        self._last = ""  # the last character read
        self.chars = 0  # characters read so far
        self.yaml_only: List[int] = []  # indexes of the breaks only YAML counts

    def read(self, size: int = -1) -> str:
        """The next chunk of text ("" only at the end); ``size`` is a hint."""
        while not self.eof:
            data = self._file.read(self.CHUNK)
            self.eof = not data
            text = self._decode(data)
            if text:
                self.newlines += text.count("\n")
                if self._last == "\r" and text[0] != "\n":  # the last chunk's lone CR
                    self.yaml_only.append(self.chars - 1)
                self.yaml_only += _yaml_only_breaks(text, self.chars, final=False)
                self.chars += len(text)
                self._last = text[-1]
                if self._kept is not None:
                    self._kept.append(text)
                return text
        last = self.chars - 1
        if self._last == "\r" and last not in self.yaml_only[-1:]:  # ends with a lone CR
            self.yaml_only.append(last)
        return ""

    def _decode(self, data: bytes) -> str:
        try:
            return self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as err:  # err.object: bytes held back + data
            line = self.newlines + err.object[:err.start].count(b"\n") + 1
            raise BadText(f"is not UTF-8 text (byte {err.object[err.start]:#04x}); "
                          "save it as UTF-8", self.path, line) from None

    def read_through_line(self, line: int) -> None:
        """Read on until line ``line`` (0-based) is whole, or to the end."""
        while self.newlines <= line and self.read():
            pass

    def head(self) -> str:
        """The text read so far (``keep`` only)."""
        assert self._kept is not None
        if len(self._kept) > 1:
            self._kept = ["".join(self._kept)]
        return self._kept[0] if self._kept else ""

    def lines(self) -> int:
        """Lines read so far (a last line without a newline counts)."""
        return self.newlines + (self._last not in ("", "\n"))

    def line_of_char(self, index: int) -> int:
        """The line of character ``index`` (reads the file again: for messages only)."""
        self._file.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        newlines = 0
        while index > 0:
            data = self._file.read(self.CHUNK)
            text = decoder.decode(data, final=not data)[:index]
            if not data and not text:
                break
            newlines += text.count("\n")
            index -= len(text)
        return newlines + 1

    def line_at(self, offset: int) -> int:
        """The line of byte ``offset`` (reads the file again: for messages only)."""
        self._file.seek(0)
        newlines = 0
        while offset > 0:
            data = self._file.read(min(offset, self.CHUNK))
            if not data:
                break
            newlines += data.count(b"\n")
            offset -= len(data)
        return newlines + 1


Source = Union[str, TextStream]


class _Reader:
    """Pulls YAML events and builds values, remembering where content ends."""

    def __init__(self, source: Source, path: str):
        self.path, self.source = path, source
        self.loader = _Loader(source)
        self.anchors: dict = {}
        self.end: Tuple[int, int] = (0, 0)  # (line, 0 at a line's start, else 1)
        self.depth = 0
        self._yaml_only = source.yaml_only if isinstance(source, TextStream) else \
            _yaml_only_breaks(source, 0)

    def line(self, mark) -> int:
        """The 0-based line of a mark as an editor counts lines, by newline alone
        (YAML's own count also breaks at NEL, LS, PS and a lone CR): the lines the
        queue file's edits cut."""
        return mark.line - bisect.bisect_left(self._yaml_only, mark.index)

    def event(self):
        return self._parse(self.loader.get_event)

    def peek(self):
        return self._parse(self.loader.peek_event)

    def _parse(self, step):
        try:
            return step()
        except yaml.MarkedYAMLError as err:
            raise _syntax_error(err, self.path, self.lines(), self.line_of) from None
        except yaml.reader.ReaderError as err:
            raise BadText(f"has a character YAML does not allow (U+{err.character:04X}: "
                          f"{err.reason}); remove it", self.path,
                          self.line_at(err.position)) from None
        except yaml.YAMLError as err:
            raise InputError(f"not valid YAML: {err}", self.path) from None

    def value(self, ev) -> Value:
        if isinstance(ev, yaml.AliasEvent):
            return self._alias(ev)
        self._check_tag(ev)
        if isinstance(ev, yaml.ScalarEvent):
            result: Value = ev.value
            self._reach(ev.end_mark)
        elif isinstance(ev, yaml.SequenceStartEvent):
            result = self._sequence(ev)
        elif isinstance(ev, yaml.MappingStartEvent):
            result = self._mapping(ev)
        else:  # pragma: no cover - the parser never yields this here
            raise InputError(f"unexpected YAML {type(ev).__name__}", self.path,
                             self.line(ev.start_mark) + 1)
        if ev.anchor is not None:
            self.anchors[ev.anchor] = result
        return result

    def _deeper(self, start) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise InputError(f"nested more than {MAX_DEPTH} levels deep; an entry "
                             "needs at most a mapping of lists", self.path,
                             self.line(start.start_mark) + 1)

    def _sequence(self, start) -> list:
        self._deeper(start)
        items = []
        while not isinstance(self.peek(), yaml.SequenceEndEvent):
            items.append(self.value(self.event()))
        self._close(start, self.event())
        self.depth -= 1
        return items

    def _mapping(self, start) -> dict:
        self._deeper(start)
        result: dict = {}
        while not isinstance(self.peek(), yaml.MappingEndEvent):
            key_ev = self.event()
            key = self.value(key_ev)
            if not isinstance(key, str):
                raise InputError("a key must be a plain word, not a list or mapping",
                                 self.path, self.line(key_ev.start_mark) + 1)
            if key in result:
                raise InputError(f"duplicate key '{key}' (each key may appear once "
                                 "in an entry)", self.path, self.line(key_ev.start_mark) + 1)
            result[key] = self.value(self.event())
        self._close(start, self.event())
        self.depth -= 1
        return result

    def _close(self, start, end) -> None:
        if start.flow_style:
            self._reach(end.end_mark)

    def _alias(self, ev) -> Value:
        self._reach(ev.end_mark)
        if ev.anchor not in self.anchors:
            raise InputError(f"unknown alias '*{ev.anchor}'", self.path,
                             self.line(ev.start_mark) + 1)
        return self.anchors[ev.anchor]

    def _check_tag(self, ev) -> None:
        tag = ev.tag
        if tag is None or tag == "!" or tag in _PLAIN_TAGS:
            return
        raise InputError(f"YAML tag '{tag}' is not allowed (Pegasus reads plain "
                         "strings, lists and mappings only)", self.path,
                         self.line(ev.start_mark) + 1)

    def _reach(self, mark) -> None:
        at_start = mark.column == 0 and not self._yaml_only_break(mark.index - 1)
        self.end = max(self.end, (self.line(mark), 0 if at_start else 1))

    def _yaml_only_break(self, index: int) -> bool:
        i = bisect.bisect_left(self._yaml_only, index)
        return i < len(self._yaml_only) and self._yaml_only[i] == index

    def lines(self) -> int:
        """Lines of the text (a stream's: at an error at its end, all were read)."""
        source = self.source
        if isinstance(source, TextStream):
            return source.lines()
        return source.count("\n") + (not source.endswith("\n"))

    def line_of(self, mark) -> int:
        """The line of a YAML mark as an editor counts lines, by newline alone
        (YAML also breaks lines at U+0085, U+2028 and U+2029)."""
        source = self.source
        if isinstance(source, TextStream):
            return source.line_of_char(mark.index)
        return source[:mark.index].count("\n") + 1

    def line_at(self, position: int) -> int:
        """The line of a ReaderError's position (libyaml counts bytes)."""
        source = self.source
        if isinstance(source, TextStream):
            return source.line_at(position)
        return source.encode("utf-8")[:position].count(b"\n") + 1

    def take_end_line(self) -> int:
        line, inside = self.end
        return line - 1 if not inside else line


def _syntax_error(err, path: str, lines: int, line_of) -> InputError:
    mark = _mistake_mark(err)
    problem = err.problem or "syntax error"
    if err.context:
        problem = f"{problem} ({err.context})"
    line = line_of(mark) if mark is not None else None
    if line is not None and lines and line > lines:  # "at the end": the last line
        line = lines
    return InputError(f"YAML syntax error: {problem}", path, line, advice=RUN_AGAIN)


def _mistake_mark(err):
    """The mark of the line the user must fix.

    PyYAML's problem mark is where the parser noticed, often lines later:
    after an unclosed quote or bracket, or a ``-echo`` read as a key that
    never gets its ``:``. The context mark is where that token or flow
    collection starts. A plain scalar's or a block collection's context is
    only the enclosing value; there the problem mark is the line.
    """
    context = err.context or ""
    token_start = (context.startswith("while scanning")
                   and context != "while scanning a plain scalar")
    if err.context_mark is not None and (token_start
                                         or context.startswith("while parsing a flow")):
        return err.context_mark
    return err.problem_mark or err.context_mark


def decode(data: bytes, path: str) -> str:
    """A file's bytes as text; InputError naming the line if not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise InputError(f"is not UTF-8 text (byte {data[err.start]:#04x}); save it "
                         "as UTF-8", path, line) from None


def read_list(source: Source, path: str) -> Tuple[Layout, Iterator[Item]]:
    """The layout of the top-level list and a lazy iterator over its items."""
    reader = _Reader(source, path)
    reader.event()  # StreamStart
    if isinstance(reader.peek(), yaml.StreamEndEvent):
        return Layout(True, 0, True), iter(())
    reader.event()  # DocumentStart
    head = reader.event()
    if isinstance(head, yaml.ScalarEvent) and head.implicit[0] \
            and head.value in ("", "~", "null"):
        return Layout(True, 0, True), _tail(reader, iter(()))
    if not isinstance(head, yaml.SequenceStartEvent):
        kind = "a mapping" if isinstance(head, yaml.MappingStartEvent) else "a single value"
        raise InputError(f"must be a YAML list of entries (lines starting with '- '), "
                         f"but it is {kind}", path, reader.line(head.start_mark) + 1)
    reader._check_tag(head)
    layout = Layout(not head.flow_style, head.start_mark.column, False)
    return layout, _items(reader, layout.block)


def _items(reader: _Reader, block: bool = True) -> Iterator[Item]:
    number, later = 0, None
    while True:
        number += 1
        try:
            if later is not None:
                raise later
            if isinstance(reader.peek(), yaml.SequenceEndEvent):
                break
            item = _item(reader)
            later = _after(reader, item, block)
        except BadText:
            raise
        except InputError as err:
            raise err.at(entry=number) from None
        yield item
    reader.event()  # SequenceEnd
    yield from _tail(reader, iter(()))


def _after(reader: _Reader, item: Item, block: bool) -> Optional[InputError]:
    """What follows ``item`` must parse up to its next event on the item's own
    last line: a take stops after its items, and the rest of that line may still
    belong to the item (``- a`` then ``  b: 1`` is a plain "a b", then a ':' YAML
    refuses). Raised then, as the item's; an error on a later line (the next
    entry, half written while a take runs) is returned, for the next item.
    In a block list the next entry must start on a line of its own: a take cuts
    whole lines (YAML also breaks lines at NEL, LS, PS and a lone CR, an editor
    does not: ``- a<NEL>- b`` is one line holding two entries)."""
    try:
        nxt = reader.peek()
    except InputError as err:
        if err.line is not None and err.line - 1 <= item.last_line:
            raise
        return err
    if block and not isinstance(nxt, yaml.SequenceEndEvent) and \
            reader.line(nxt.start_mark) <= item.last_line:
        raise InputError("the next entry starts on this entry's line, after a line break "
                         "YAML counts but an editor does not (NEL, LS, PS or a lone CR); "
                         "end each entry's line with a newline", reader.path,
                         item.last_line + 1)
    return None


def _item(reader: _Reader) -> Item:
    ev = reader.event()
    reader.end = (0, 0)
    first = reader.line(ev.start_mark)
    value = reader.value(ev)
    return Item(value, first, max(first, reader.take_end_line()))


def _tail(reader: _Reader, items: Iterator[Item]) -> Iterator[Item]:
    yield from items
    reader.event()  # DocumentEnd
    nxt = reader.event()
    if not isinstance(nxt, yaml.StreamEndEvent):
        raise InputError("has more than one YAML document ('---'); keep one list",
                         reader.path, reader.line(nxt.start_mark) + 1)


def read_all(text: str, path: str) -> Tuple[Layout, List[Item]]:
    """Parse the whole list (checks the syntax of every entry)."""
    layout, items = read_list(text, path)
    return layout, list(items)


def entry_line(item: Optional[Item]) -> Optional[int]:
    """1-based line number of an item, for messages."""
    return None if item is None else item.first_line + 1
