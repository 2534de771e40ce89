"""The control point of a running Pegasus: where it is, and how to talk to it.

A Pegasus running a queue listens on a Unix socket in a folder private to
its user (``$XDG_RUNTIME_DIR/pegasus``, else ``/tmp/pegasus-<uid>``, mode
0700, owned by the user: anything else is refused). The socket's name is
``<key>.<pid>.sock``, the key a hash of the queue file's real path, so
several Pegasus on different queues answer only for their own. A request is
one line of JSON, the answer one line of JSON (``controlserver`` answers).

A socket whose Pegasus died (``kill -9``) refuses connections: it is
removed by whoever finds it, and fools nobody.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import socket
import stat
from typing import Dict, Iterator, List, Tuple

from pegasus.errors import ControlError

ANSWER_WITHIN = 5.0  # seconds a client waits for a running Pegasus's answer
MAX_LINE = 1 << 20  # bytes of one request or answer, at most


def folder(create: bool = False) -> str:
    """The user's private folder of control sockets (checked: owned, 0700)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    path = (os.path.join(runtime, "pegasus") if runtime
            else os.path.join("/tmp", f"pegasus-{os.getuid()}"))
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as err:
            raise ControlError(f"{path}: cannot create the control folder: "
                               f"{err.strerror}") from None
    _check_private(path)
    return path


def _check_private(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as err:
        raise ControlError(f"{path}: {err.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ControlError(f"{path} is not a folder private to you (it must be yours, "
                           "mode 0700, not a link): another user could reach your runs "
                           "through it; remove it and start Pegasus again")


def key(queue_path: str) -> str:
    """The queue file's real path, hashed: one name however the queue was named."""
    return hashlib.sha256(os.path.realpath(queue_path).encode()).hexdigest()[:20]


def socket_path(queue_path: str, pid: int, where: str) -> str:
    return os.path.join(where, f"{key(queue_path)}.{pid}.sock")


def sockets(queue_path: str) -> List[Tuple[int, str]]:
    """(pid, path) of every control socket of this queue, live or stale."""
    where = folder()
    found = []
    for path in glob.glob(os.path.join(where, f"{key(queue_path)}.*.sock")):
        pid = os.path.basename(path).split(".")[1]
        if pid.isdigit():
            found.append((int(pid), path))
    return sorted(found)


def ask_all(queue_path: str, request: Dict) -> Iterator[Tuple[int, Dict]]:
    """(pid, answer) from each Pegasus running on the queue; stale sockets removed."""
    for pid, path in sockets(queue_path):
        answer = ask(path, request)
        if answer is None:
            _remove_stale(path)
        else:
            yield pid, answer


def ask(path: str, request: Dict):
    """The answer of the Pegasus listening on ``path``; None if none listens."""
    _check_owner(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(ANSWER_WITHIN)
        try:
            sock.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return None  # its Pegasus died
        except OSError as err:
            raise ControlError(f"{path}: cannot reach the running Pegasus: "
                               f"{err.strerror or err}") from None
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            return json.loads(read_line(sock))
        except (OSError, ValueError) as err:
            raise ControlError(f"{path}: the running Pegasus (pid {path.split('.')[-2]}) "
                               f"did not answer within {ANSWER_WITHIN:g} s ({_why(err)}); "
                               "it may be stopped (Ctrl-z) or overloaded") from None


def _check_owner(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if st.st_uid != os.getuid() or not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"{path} belongs to another user (or is not a socket): "
                           "refusing to talk to it; remove it")


def read_line(sock) -> bytes:
    """One line (without its newline) from a socket; ValueError if cut short."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("the connection closed")
        data += chunk
        if len(data) > MAX_LINE:
            raise ValueError("the line is too long")
    return data[:-1]


def _remove_stale(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _why(err: Exception) -> str:
    if isinstance(err, socket.timeout) or getattr(err, "errno", None) == errno.EAGAIN:
        return "no answer"
    return getattr(err, "strerror", None) or str(err)
