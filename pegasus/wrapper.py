"""The remote job wrapper (``wrapper.sh``) and what Pegasus sends it.

``script(silence)`` reads wrapper.sh once, on first use: without its comments
and blank lines, with ``KILL_AFTER - 1``, ``ORPHANED`` and the clock of the
silence (the orphan timeout, in seconds) filled in. Each job then costs one ``str.replace``
for its nonce (``shell_command``). The wrapper reads
its command from the channel's stdin (``command_input``), ended by a line with
that nonce. Why and how it works is told beside its lines in wrapper.sh.

The ``kill_after`` arguments (seconds from TERM to KILL, default
``KILL_AFTER``) and ``tick`` (the step of the clock of shells without
``read -t``, default from the silence) are
for tests, which wait for shorter delays; Pegasus never gives them.
"""

from __future__ import annotations

import functools
import re
import secrets
import shlex
from importlib import resources
from typing import Iterable, Iterator, Optional

from pegasus.executor import KILL_AFTER, ORPHAN_TIMEOUT, ORPHANED

# Login shells that run the wrapper as POSIX sh; any other (fish, csh, ...)
# execs ``sh`` to run it, which costs a process start a job.
POSIX_LOGIN_SHELLS = frozenset({"sh", "dash", "bash", "ksh", "mksh", "ash"})

NONCE = "{nonce}"  # filled for each job
SILENCE = "{SILENCE}"  # the orphan timeout, in seconds (bash's read -t)
TICK, TICKS = "{TICK}", "{TICKS}"  # the clock of other shells, filled per orphan timeout
_UNFILLED = re.compile(r"(?<!\$)\{[A-Za-z_][A-Za-z_0-9 +-]*\}")  # not ${name}


@functools.lru_cache(maxsize=None)
def script(silence: int, kill_after: int = KILL_AFTER, tick: Optional[int] = None) -> str:
    """wrapper.sh as sent to the node, with ``{nonce}`` still in it: under bash,
    its watchdog's ``read -t`` waits SILENCE s for a line; under other shells its
    clock ticks every ``tick`` s (by default 5, or 1 below 10 s), TICKS times (the
    silence, rounded up)."""
    tick = tick or (5 if silence >= 10 else 1)
    return (_prepared(kill_after).replace(SILENCE, str(silence)).replace(TICK, str(tick))
            .replace(TICKS, str(-(-silence // tick))))


@functools.lru_cache(maxsize=None)
def _prepared(kill_after: int) -> str:
    text = resources.files("pegasus").joinpath("wrapper.sh").read_text(encoding="utf-8")
    return prepare(text, kill_after)


def prepare(text: str, kill_after: int = KILL_AFTER) -> str:
    """A script without its comments, its placeholders but ``{nonce}`` and the
    clock's filled in."""
    code = "".join(line + "\n" for line in strip_comments(text.splitlines()))
    for placeholder, value in (("{KILL_AFTER - 1}", str(kill_after - 1)),
                               ("{ORPHANED}", str(ORPHANED))):
        code = code.replace(placeholder, value)
    unfilled = set(_UNFILLED.findall(code)) - {NONCE, SILENCE, TICK, TICKS}
    if unfilled:
        raise ValueError(f"wrapper.sh: unknown placeholder(s) {', '.join(sorted(unfilled))}")
    return code


def strip_comments(lines: Iterable[str]) -> Iterator[str]:
    """The lines of a sh script without comments, comment-only and blank lines.

    A ``#`` starts a comment at the start of a word outside quotes; quotes may
    span lines. Here-documents and quotes inside ``$(...)`` are not understood:
    wrapper.sh has none.
    """
    quote = ""
    for line in lines:
        inside, (code, quote) = quote, _code_of(line, quote)
        if inside or code.strip():  # else: blank, or only a comment
            yield code


def _code_of(line: str, quote: str):
    """(line without its comment, the quote still open at its end)."""
    i = 0
    while i < len(line):
        char = line[i]
        if quote == "'":
            quote = "" if char == "'" else quote
        elif char == "\\":
            i += 1  # the next character is escaped
        elif quote == '"':
            quote = "" if char == '"' else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip(), quote
        i += 1
    return line, quote


def shell_command(nonce: str, posix_login_shell: bool = False,
                  silence: int = ORPHAN_TIMEOUT, kill_after: int = KILL_AFTER,
                  tick: Optional[int] = None) -> str:
    """The exec string of a wrapper that waits for its command (``command_input``)."""
    code = script(silence, kill_after, tick).replace(NONCE, nonce)
    if posix_login_shell:
        return code
    return f"exec sh -c {shlex.quote(code)}"


def command_input(command: str, nonce: str) -> bytes:
    """What the wrapper reads: the command's lines, then the nonce's line."""
    return f"{command}\n{nonce}\n".encode("utf-8", "surrogateescape")


def new_nonce() -> str:
    return "pegasus-" + secrets.token_hex(12)
