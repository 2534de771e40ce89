"""Command and hostname templates: Handlebars rendered verbatim for the shell.

This module owns turning a template such as ``train.py --lr={{lr}} {{shq tag}}``
plus one point's parameters into the exact text handed to ``sh``. It wraps
pybars3 and removes its traps: values and helper results go in verbatim, never
HTML-escaped; unknown names are errors (also in helper arguments and dotted
paths); an unclosed ``{{`` is an error, where pybars drops the rest of the
template; ``[...]`` segments with quotes, which pybars would paste into the
Python it generates, are refused. Only the documented helpers exist: the
string helpers of handlebars_misc_helpers (as in the Rust Pegasus), ``lower``,
``upper`` and ``shq`` (POSIX sh quoting, as shlex.quote). pybars' own helpers
(``each``, ``if``, ``with``, ``lookup``, ``helperMissing``...) and blocks are
refused before anything renders: they turned unknown names into nothing.
Handlebars' escape ``\\{{`` writes a literal ``{{``.
"""

from __future__ import annotations

import functools
import inspect
import re
import shlex
import threading
from typing import Callable, Iterable, Mapping, Tuple

from pegasus.errors import TemplateError

_WORD = re.compile(r"[A-Z]+(?=[A-Z][^\W_A-Z])|[A-Z]?[^\W_A-Z]+|[A-Z]+")


def _joined(sep: str, case: Callable[[str], str]) -> Callable[[str], str]:
    return lambda s: sep.join(case(w) for w in _WORD.findall(s))


_pascal_case = _joined("", str.capitalize)

_HELPERS: dict = {
    "replace": lambda s, old, new: s.replace(old, new),
    "lowerCase": str.lower, "lower": str.lower,
    "upperCase": str.upper, "upper": str.upper,
    "capitalizeFirst": lambda s: s[:1].upper() + s[1:],
    "capitalizeWords": lambda s: re.sub(r"(?<!\S)\S", lambda m: m[0].upper(), s),
    "camelCase": lambda s: _pascal_case(s)[:1].lower() + _pascal_case(s)[1:],
    "pascalCase": _pascal_case,
    "snakeCase": _joined("_", str.lower),
    "kebabCase": _joined("-", str.lower),
    "shoutySnakeCase": _joined("_", str.upper),
    "trim": str.strip, "trimStart": str.lstrip, "trimEnd": str.rstrip,
    "shq": shlex.quote,
}


class _Problem(Exception):
    """What is wrong in a template while it renders; `hint`: "name", "helper" or "empty"."""

    def __init__(self, what: str, hint: str = ""):
        super().__init__(what)
        self.hint = hint


class _Missing:
    """What an undefined name looks up to: any use of it raises _Problem."""

    def __init__(self, name: str):
        self.name = name

    def fail(self, *args, **kwargs):  # called with (this, *args) as a helper
        kind = "helper" if len(args) > 1 or kwargs else "name"
        raise _Problem(f"unknown {kind} {self.name!r}", kind)

    __call__ = __str__ = __bool__ = __len__ = __iter__ = fail

    def __getitem__(self, key):
        return self


class _Value:
    """A defined value: text, truthy when non-empty, with no fields."""

    def __init__(self, name: str, text: str):
        self.name, self.text = name, str(text)

    def __str__(self) -> str:
        return self.text

    def __bool__(self) -> bool:
        return bool(self.text)

    def __getitem__(self, key) -> _Missing:
        return _Missing(f"{self.name}.{key}")


class _Names(dict):
    """The render context: name -> _Value; any other name -> _Missing."""

    def __missing__(self, name: str) -> _Missing:
        return _Missing(name)

    def __str__(self) -> str:  # {{this}} at the top level
        raise _Problem("unknown name 'this'", "name")


@functools.lru_cache(maxsize=None)
def _arity(fn: Callable) -> int:
    """How many arguments ``fn`` takes: asked at a helper's first use, not at
    import (inspect's signatures of every helper cost a start ~4 ms)."""
    return sum(p.default is p.empty for p in inspect.signature(fn).parameters.values())


def _as_helper(name: str, fn: Callable) -> Callable:
    """`fn` as a pybars helper: text in, text out, exact arity; never an empty value."""

    def helper(this, *args, **kwargs):
        if kwargs:
            raise _Problem(f"helper {name!r} takes no key=value arguments")
        arity = _arity(fn)
        if len(args) != arity:
            raise _Problem(f"helper {name!r} takes {arity} argument"
                           f"{'s' * (arity != 1)} (got {len(args)})")
        for arg in args:
            if not isinstance(arg, (str, _Value)):
                str(arg)  # an unknown name fails here
                raise _Problem(f"helper {name!r} takes names or quoted text")
        texts = [str(arg) for arg in args]
        value = fn(*texts)
        # shq's '' is an empty word too: `rm -rf /data/''` is `rm -rf /data/`.
        if not value.strip() or (name == "shq" and not texts[0].strip()):
            raise _Problem(f"helper {name!r} gives an empty value (from "
                           f"{', '.join(map(repr, texts))})", "empty")
        return value
    return helper


# pybars' own helpers, shadowed: their names are plain names ({{each}} is the
# parameter 'each'); as helpers they rendered unknown names to nothing.
_PYBARS_HELPERS = ("blockHelperMissing", "each", "if", "helperMissing", "log",
                   "lookup", "unless", "with")
_RENDER_HELPERS = dict(dict.fromkeys(_PYBARS_HELPERS),
                       **{name: _as_helper(name, fn) for name, fn in _HELPERS.items()})

_LOCK = threading.Lock()  # pybars' code builder is shared by every Compiler


@functools.lru_cache(maxsize=None)
def _compiler():
    """pybars, imported on first use: building its grammar takes ~0.3 s."""
    import pybars

    return pybars.Compiler()


def _shown(template: str) -> str:
    return repr(template if len(template) <= 80 else template[:77] + "...")


def _syntax(text: str, stop: int, far: int) -> str:
    """Words for the place pybars' parser could not get past."""
    last = text.rfind("{{")
    if text.find("}}", last) < 0:
        return f"unclosed '{{{{' at {text[last:last + 30]!r}"
    block = re.match(r"\{\{[#^]\s*([^\s}]+)", text[stop:])
    if block and far >= len(text):
        return "'{{#%s}}' is never closed by '{{/%s}}'" % (block[1], block[1])
    start, end = text.rfind("{{", 0, far + 1), text.find("}}", far)
    return f"syntax error at {text[max(start, 0):end + 2 if end >= 0 else None]!r}"


# pybars pastes path segments into the Python it generates, between ' or "
# quotes: a quote, a backslash or a control character could break out.
_UNSAFE = re.compile(r"['\"\\\x00-\x1f\x7f]")


def _unsafe_segment(node) -> str | None:
    """A ``[...]`` path segment that pybars would paste into Python unsafely."""
    if not isinstance(node, (list, tuple)):
        return None
    if len(node) == 2 and node[0] == "path":
        return next((s for s in node[1] if _UNSAFE.search(s)), None)
    return next(filter(None, map(_unsafe_segment, node)), None)


def _parse(chunk: str) -> list:
    """pybars' tree of the chunk; _Problem unless its parser reads it whole, safely.

    pybars compares its furthest *failure* with the end of the text, so it
    drops the rest after an unclosed ``{{`` or block: we see how far it got.
    """
    compiler = _compiler()
    text = compiler.whitespace_control(chunk)
    parser = type(compiler)._handlebars(text)
    try:
        tree, err = parser.apply("template")
    except RecursionError:
        raise _Problem("nested too deeply") from None
    except Exception:  # noqa: BLE001 - pybars' grammar fails in odd ways (e.g. '²')
        raise _Problem("cannot parse") from None
    if parser.input.position < len(text):
        far = parser.input.position if err.position is None else err.position
        raise _Problem(_syntax(text, parser.input.position, far))
    bad = _unsafe_segment(tree)
    if bad is not None:
        raise _Problem(f"quotes and backslashes are not allowed in [{bad}]")
    _refuse_unsupported(tree)
    return tree


def _code(tree: list) -> str:
    """The Python pybars generates from the tree: ``Compiler.precompile``'s steps
    (pybars3 0.9.7, pinned) less its second parse, about 40% of a compile."""
    generate = _compiler()._compiler
    generate.globals["builder"]._reset()
    return generate(tree).apply("compile")[0].full_code


def _refuse_unsupported(tree: list) -> None:
    """Blocks, partials and helpers other than ours: refused before rendering."""
    for node in tree[1:]:
        kind = node[0]
        if kind in ("block", "invertedblock", "rawblock"):
            if node[1] in _HELPERS:
                raise _Problem("blocks ('{{#...}}', '{{^...}}') are not supported: "
                               "use helpers inline, as in '{{%s x}}'" % node[1])
            raise _Problem(f"unknown helper {node[1]!r} (there are no blocks such as "
                           f"'{{{{#{node[1]}}}}}')", "helper")
        if kind == "partial":
            raise _Problem("partials ('{{> name}}') are not supported")
        if kind in ("expand", "escapedexpand"):
            _refuse_unknown_helper(node[1], node[2], bool(node[2]))


def _refuse_unknown_helper(path: tuple, args: list, call: bool) -> None:
    """A call (``{{name args}}``, ``(name ...)``) must name one of our helpers."""
    name = ".".join(segment for segment in path[1] if segment)
    if call and (len(path[1]) != 1 or name not in _HELPERS):
        raise _Problem(f"unknown helper {name!r}", "helper")
    for arg in args:
        if arg[0] == "kwparam":
            raise _Problem(f"helper {name!r} takes no key=value arguments")
        if arg[0] == "subexpr":
            _refuse_unknown_helper(arg[1], arg[2], True)


# ``{{ name }}`` and ``{{ helper name }}`` (a helper of one argument) alone, as
# pybars reads them: most commands hold nothing else, and need no parse of
# pybars' grammar, the ~10 ms of a first check or render per command
# (tests/test_template.py checks both ways agree on templates of every kind of piece).
_SIMPLE = re.compile(r"\{\{[ \t\r\n]*(?:([A-Za-z]+)[ \t\r\n]+)?"
                     r"([A-Za-z_][A-Za-z0-9_-]*)[ \t\r\n]*\}\}")
_NOT_SIMPLE = frozenset(("else", "this", *_HELPERS))  # pybars' own meanings, our helpers
_LITERAL = re.compile("true|false|null|undefined")  # an argument pybars reads as a value
_UNARY = frozenset(name for name, fn in _HELPERS.items() if name != "replace")


def _simple_part(match) -> tuple | None:
    """(helper or None, name) of a ``{{ ... }}`` the shortcut renders as pybars does."""
    helper, name = match[1], match[2]
    if name in _NOT_SIMPLE or (helper and (helper not in _UNARY or _LITERAL.match(name))):
        return None
    return (_RENDER_HELPERS[helper] if helper else None, name)


def _simple(chunk: str) -> Callable | None:
    """The render function of a chunk of text and ``{{ [helper] name }}`` only, else None."""
    if "~}}" in chunk:  # pybars' whitespace control would eat it
        return None
    texts, parts, at = [], [], 0
    for match in _SIMPLE.finditer(chunk):
        part = _simple_part(match)
        if chunk.find("{{", at) != match.start() or part is None:
            return None
        texts.append(chunk[at:match.start()])
        parts.append(part)
        at = match.end()
    if "{{" in chunk[at:]:
        return None
    texts.append(chunk[at:])

    def render(values, helpers=None):
        out = [texts[0]]
        for (helper, name), text in zip(parts, texts[1:]):
            value = values[name]  # an unknown name's str() raises _Problem
            out += (helper(values, value) if helper else str(value), text)
        return "".join(out)
    return render


@functools.lru_cache(maxsize=4096)
def _compile(chunk: str) -> Callable:
    """The render function of `chunk`, compiled once; never HTML-escapes.

    A chunk that does not compile is parsed once too: its render function
    raises the same problem (a check, then a render, of a bad entry)."""
    try:
        return _simple(chunk) or _pybars(chunk)
    except _Problem as problem:
        return _refused(str(problem), problem.hint)


def _refused(what: str, hint: str) -> Callable:
    def render(values, helpers=None):
        raise _Problem(what, hint)
    return render


def _pybars(chunk: str) -> Callable:
    """The render function pybars compiles for `chunk`, its escaping turned off."""
    with _LOCK:
        tree = _parse(chunk)
        try:
            code = _code(tree)
            namespace: dict = {}
            exec(compile(code, "<pegasus template>", "exec"), namespace)
        except RecursionError:
            raise _Problem("nested too deeply") from None
        except Exception as err:  # noqa: BLE001 - pybars' compiler, in words
            raise _Problem("cannot parse") from err
    # The generated code escapes via its own global `prepare`: replace it in
    # this template's namespace only (pybars itself stays untouched).
    escaping = namespace["prepare"]
    namespace["prepare"] = lambda value, _escape: escaping(value, False)
    return namespace["render"]


@functools.lru_cache(maxsize=4096)
def _chunks(template: str) -> Tuple[str, ...]:
    """`template` cut at its escaped ``\\{{``; rendered, they are joined by ``{{``.

    As in Handlebars: ``\\{{`` is a literal ``{{`` (what follows up to the next
    ``{{`` is text), ``\\\\{{`` a backslash and a real ``{{``; backslashes
    elsewhere, and inside a ``{{...}}``, are text.
    """
    chunks, pieces, start, at = [], [], 0, 0
    while True:
        at = template.find("{{", at)
        if at < 0:
            break
        before = template[start:at]
        if before.endswith("\\\\") or not before.endswith("\\"):
            pieces.append(before[:-1] if before.endswith("\\") else before)
            start, at = at, _mustache_end(template, at)
            continue
        pieces.append(before[:-1])
        chunks.append("".join(pieces))
        pieces, start, at = [], at + 2, at + 2
    pieces.append(template[start:])
    return tuple(chunks) + ("".join(pieces),)


def _mustache_end(text: str, at: int) -> int:
    end = text.find("}}", at + 2)
    return len(text) if end < 0 else end + 2


def _problem(err: Exception) -> _Problem:
    """`err`, raised while rendering, in a user's words."""
    if isinstance(err, _Problem):
        return err
    if isinstance(err, RecursionError):
        return _Problem("nested too deeply")
    return _Problem("cannot render")


def _run(template: str, values: _Names) -> str:
    try:
        return "{{".join(_render_chunk(chunk, values) for chunk in _chunks(template))
    except Exception as err:  # ours, pybars' own errors, anything odd
        problem = _problem(err)
        hints = {"name": f" (defined here: {', '.join(sorted(values)) or 'none'})",
                 "helper": f" (helpers: {', '.join(_HELPERS)})",
                 "empty": "; a value of nothing or only whitespace is refused, as an empty "
                          "parameter value is ('rm -rf /data/{{x}}' would run "
                          "'rm -rf /data/')"}
        raise TemplateError(f"{problem} in template {_shown(template)}"
                            f"{hints.get(problem.hint, '')}") from err


def _render_chunk(chunk: str, values: _Names) -> str:
    if "{{" not in chunk:
        return chunk
    return _compile(chunk)(values, helpers=_RENDER_HELPERS)


def check(template: str, names: Iterable[str], values: Mapping[str, str] = {}) -> None:
    """Raise TemplateError if `template` cannot render with exactly `names` defined,
    with the `values` known and a placeholder for the others."""
    if "{{" in template:
        _run(template, _Names((n, _Value(n, values.get(n, f"<{n}>"))) for n in names))


@functools.lru_cache(maxsize=4096)
def calls_helpers(template: str) -> bool:
    """Whether `template` may call a helper (whose value depends on the values)."""
    return bool(_CALL.search(template))


# A helper's name where a call may start (``{{name ``, ``{{~name ``, ``(name ``):
# may match more (text that is no call), never less.
_CALL = re.compile(r"[{~(\s](?:%s)\s" % "|".join(map(re.escape, _HELPERS)))


def render(template: str, context: Mapping[str, str]) -> str:
    """`template` with `context`'s values inserted verbatim, never escaped."""
    if "{{" not in template:
        return template
    return _run(template, _Names((name, _Value(name, text)) for name, text in context.items()))
