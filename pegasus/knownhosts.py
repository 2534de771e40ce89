"""Host key verification against OpenSSH known_hosts files.

parallel-ssh verifies nothing; ssh2-python hands over the server's key blob
(``session.hostkey()``). This module owns reading known_hosts the way OpenSSH
does (comma lists, ``[host]:port``, ``|1|salt|hmac`` hashed names, ``*``/``?``
wildcards, ``!`` negation, ``@revoked``; ``@cert-authority`` lines are ignored
as Pegasus does no certificates) and the policy of the original Pegasus,
OpenSSH's ``accept-new``: a key never seen for a host is learned and appended
to the first (user) file; ``yes`` refuses unknown hosts; a CHANGED or revoked
key is refused under every policy, ``no`` included.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fcntl
import functools
import hashlib
import hmac
import os
import re
import shlex
import stat
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .errors import HostKeyError

POLICIES = ("yes", "accept-new", "no")
REVOKED, CERT_AUTHORITY = "@revoked", "@cert-authority"
_UNRECORDABLE = re.compile(r"[\s\x00-\x1f\x7f,#|@!*?]")  # would change the line
_LEARNING = threading.Lock()  # one learner at a time per process (flock across)


@dataclass(frozen=True)
class Entry:  # one usable known_hosts line
    path: str
    line: int  # 1-based
    marker: str  # "", REVOKED or CERT_AUTHORITY
    hosts: str  # the host pattern field, as written
    key_type: str
    blob: bytes


def key_type_of(blob: bytes) -> str:
    """The key type name a wire-format public key blob starts with."""
    size = struct.unpack(">I", blob[:4])[0] if len(blob) >= 4 else 0
    name = blob[4:4 + size]
    if not 0 < size <= 64 or len(name) != size or not name.isascii() \
            or not name.decode().isprintable():
        raise ValueError("host key blob does not start with a key type name")
    return name.decode()


def host_string(host: str, port: int) -> str:
    """The name OpenSSH looks up: ``host``, or ``[host]:port`` off port 22."""
    host = host.lower()
    return host if port in (0, 22) else f"[{host}]:{port}"


def check_host_key(target_host: str, port: int, blob: bytes, files: Sequence[str],
                   policy: str, hash_new: bool = False,
                   alias_for_messages: Optional[str] = None,
                   other_type_is_change: bool = False) -> str:
    """"known" or "learned" (appended to ``files[0]``); else HostKeyError.

    ``target_host`` is the HostKeyAlias when one is set, else the HostName.
    A key whose type is not recorded for the host is "unknown" by default.
    With ``other_type_is_change`` it is refused as changed when the host has
    keys of other types, as OpenSSH does (it prefers the recorded types in key
    exchange, so a server offering another type lacks the recorded key).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
    name, host = alias_for_messages or target_host, host_string(target_host, port)
    try:
        key_type = key_type_of(blob)
    except ValueError as err:
        raise HostKeyError(name, f"the server sent an unreadable host key ({err})") from None
    verdict = functools.partial(_verdict, name, host, key_type, blob, files,
                                other_type_is_change)
    if verdict() == "known":
        return "known"
    if policy == "yes":
        raise HostKeyError(name, _unknown_words(host, target_host, port, key_type,
                                                blob, files))
    return _learn(name, host, key_type, blob, files[0] if files else os.devnull,
                  policy, hash_new, verdict)


def known_key_types(target_host: str, port: int, files: Sequence[str]) -> List[str]:
    """Key types recorded for the host, first seen first (to prefer in kex)."""
    entries = _matching(host_string(target_host, port), files)
    return list(dict.fromkeys(e.key_type for e in entries if not e.marker))


def _verdict(name: str, host: str, key_type: str, blob: bytes,
             files: Sequence[str], other_type_is_change: bool) -> str:
    """"known" or "unknown"; raises for a revoked or changed key."""
    entries = list(_matching(host, files))
    for entry in entries:
        if entry.marker == REVOKED and entry.blob == blob:
            raise HostKeyError(name, f"the server's {key_type} host key is marked "
                               f"@revoked in {entry.path}:{entry.line}; refusing it")
    recorded = [e for e in entries if not e.marker]
    same_type = [e for e in recorded if e.key_type == key_type]
    if any(e.blob == blob for e in same_type):
        return "known"
    clash = same_type or (recorded if other_type_is_change else [])
    if clash:
        raise HostKeyError(name, _changed_words(host, key_type, blob, clash[0]))
    return "unknown"


def _changed_words(host: str, key_type: str, blob: bytes, entry: Entry) -> str:
    return (f"REMOTE HOST KEY HAS CHANGED (possible man-in-the-middle attack, or the "
            f"host was reinstalled): the server's {key_type} key {fingerprint(blob)} "
            f"differs from the {entry.key_type} key recorded for {host} at "
            f"{entry.path}:{entry.line}. If you know why it changed, remove the old "
            f"key with: ssh-keygen -R {shlex.quote(host)} -f {shlex.quote(entry.path)}"
            "  and connect again")


def _unknown_words(host: str, target: str, port: int, key_type: str, blob: bytes,
                   files: Sequence[str]) -> str:
    where = shlex.quote(files[0]) if files else "~/.ssh/known_hosts"
    scan = f"ssh-keyscan {'-p %d ' % port if port not in (0, 22) else ''}" \
           f"{shlex.quote(target)} >> {where}"
    return (f"host key for {host} ({key_type} {fingerprint(blob)}) is not known "
            f"and StrictHostKeyChecking is yes; add it with {scan} (check the "
            f"fingerprint), or connect once with ssh")


def fingerprint(blob: bytes) -> str:
    """OpenSSH's default fingerprint: SHA256:base64, unpadded."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _learn(name: str, host: str, key_type: str, blob: bytes, path: str,
           policy: str, hash_new: bool, verdict: Callable[[], str]) -> str:
    try:
        with _LEARNING, _appending(path) as fd:
            if verdict() == "known":  # another learner wrote it meanwhile
                return "known"
            if fd is not None:
                _write_line(fd, _line(host, key_type, blob, hash_new))
    except (OSError, ValueError) as err:
        if policy != "no":  # under "no" the user asked us not to care
            raise HostKeyError(name, f"cannot record its new {key_type} host key in "
                               f"{path}: {err}; fix that file or its directory, or "
                               "set UserKnownHostsFile in ssh_config") from None
    return "learned"


@contextlib.contextmanager
def _appending(path: str) -> Iterator[Optional[int]]:
    """An exclusively locked append fd for ``path``; None to discard (/dev/null).

    Symlinks are followed, as OpenSSH does: dotfile managers link known_hosts,
    and anyone able to plant a link in ~/.ssh could rewrite the file anyway.
    O_NONBLOCK and the S_ISREG check keep a FIFO or device there from hanging
    or receiving keys; a character device (/dev/null, or a link to it) is the
    usual "record nothing" idiom and is honoured silently.
    """
    if path == os.devnull:
        yield None
        return
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)  # 0600 when created; umask can only narrow
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
            raise OSError(errno.EINVAL, "not a regular file")
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by close
        yield fd if stat.S_ISREG(mode) else None
    finally:
        os.close(fd)


def _line(host: str, key_type: str, blob: bytes, hashed: bool) -> bytes:
    if _UNRECORDABLE.search(host) or not host:
        raise ValueError(f"host name {host!r} cannot be written to known_hosts")
    name = _hash_host(host, os.urandom(20)) if hashed else host
    return f"{name} {key_type} {base64.b64encode(blob).decode()}\n".encode()


def _write_line(fd: int, line: bytes) -> None:
    """Append in one write (O_APPEND), after a newline if the file lacks one."""
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        line = b"\n" + line
    written = os.write(fd, line)
    while written < len(line):  # only on a full disk or a signal; rare
        written += os.write(fd, line[written:])
    os.fsync(fd)


def _hash_host(host: str, salt: bytes) -> str:
    """OpenSSH HashKnownHosts: |1|base64(salt)|base64(HMAC-SHA1(salt, host))."""
    digest = hmac.new(salt, host.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def _matching(host: str, files: Sequence[str]) -> Iterator[Entry]:
    """Entries of ``files`` whose host field applies to ``host``."""
    for path in files:
        for entry in _entries(path):
            if entry.marker != CERT_AUTHORITY and _applies(entry.hosts, host):
                yield entry


def _entries(path: str) -> List[Entry]:
    """The usable lines of a known_hosts file, parsed once while it stays the same
    (a fan-out checks every host's key against the same file: 64 hosts parsed it
    64 times, 0.3 s of a 1.8 s broadcast). A file written in the last
    ``SETTLED`` s is read again: a rewrite of the same size in the same clock tick
    keeps its (inode, size, mtime)."""
    try:  # O_NONBLOCK: a FIFO at the path must not hang us; read regular files only
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as stream:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return []
            version = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            cached = _PARSED.get(path)
            if cached is not None and cached[0] == version \
                    and time.time() - st.st_mtime > SETTLED:
                return cached[1]
            data = stream.read()
    except OSError:  # missing or unreadable: OpenSSH skips it too
        return []
    entries = [entry for entry in (_parse_line(path, number, raw.decode("utf-8", "replace"))
                                   for number, raw in enumerate(data.split(b"\n"), 1))
               if entry is not None]
    _PARSED[path] = (version, entries)
    return entries


SETTLED = 2.0  # seconds (a file system that keeps whole seconds: FAT's 2)
_PARSED: Dict[str, Tuple[Tuple[int, int, int, int], List[Entry]]] = {}  # path -> (version, entries)


def _parse_line(path: str, number: int, text: str) -> Optional[Entry]:
    fields = re.split(r"[ \t]+", text.strip(" \t\r"))
    if not fields[0] or fields[0].startswith("#"):
        return None
    marker = fields.pop(0) if fields[0].startswith("@") else ""
    if marker not in ("", REVOKED, CERT_AUTHORITY) or len(fields) < 3:
        return None
    hosts, key_type, encoded = fields[:3]
    try:
        blob = base64.b64decode(encoded, validate=True)
        if key_type_of(blob) != key_type:
            return None
    except (binascii.Error, ValueError):
        return None
    return Entry(path, number, marker, hosts, key_type, blob)


def _applies(hosts: str, host: str) -> bool:
    if hosts.startswith("|"):
        return _hashed_match(hosts, host)
    return _match_list(host, hosts) == 1


def _hashed_match(field: str, host: str) -> bool:
    parts = field.split("|")
    try:
        salt = base64.b64decode(parts[2], validate=True) if len(parts) == 4 else b""
    except (binascii.Error, ValueError):
        return False
    return parts[1] == "1" and len(salt) == 20 and _hash_host(host, salt) == field


def _match_list(host: str, patterns: str) -> int:
    """OpenSSH match_hostname: 1 match, -1 a negated pattern matched, 0 none."""
    found = 0
    for pattern in patterns.lower().split(","):
        negated = pattern.startswith("!")
        if _glob(pattern[1:] if negated else pattern).fullmatch(host):
            if negated:
                return -1
            found = 1
    return found


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str) -> "re.Pattern[str]":
    """An OpenSSH wildcard pattern: ``*`` any run, ``?`` one character."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)
