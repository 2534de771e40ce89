"""The running Pegasus's side of ``pegasus status``, ``stop`` and ``kill``.

``serve(loop)`` listens on the queue's control socket (``control``) while
the loop runs: a greenlet per connection, which refuses a peer of another
user (``SO_PEERCRED``), reads one request and answers it. ``status`` is read
from the loop's state as it is now (``snapshot``: it changes nothing);
``stop`` is delivered as Ctrl-c is (``loop.signalled``); ``kill`` is an
``events.Request`` the loop acts on between two of its steps, so the loop
stays the one owner of its jobs. With ``modes``, ``running``, ``connecting``
and ``probing``, the only code that spawns greenlets (the server's, and one
that looks at the sub-nodes' states every second).
"""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Dict, List, Optional

import gevent
import gevent.server
import gevent.socket
from gevent.event import AsyncResult

from pegasus import control, snapshot
from pegasus.errors import PegasusError
from pegasus.events import Request, Signal
from pegasus.executor import KILL_AFTER
from pegasus.words import plural

SAMPLE_EVERY = 1.0  # seconds between two looks at the sub-nodes' states (their "since")


class Server:
    """The control socket of one run; ``close`` removes it."""

    def __init__(self, loop, path: str, listener: socket.socket):
        self.loop, self.path = loop, path
        self.states = snapshot.NodeStates()
        self.server = gevent.server.StreamServer(listener, self._handle)
        self.server.start()
        self.sampler = gevent.spawn(self._sample)

    def close(self) -> None:
        self.sampler.kill(block=False)
        self.server.stop(timeout=0)
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _sample(self) -> None:
        while True:
            self.states.look(self.loop)
            gevent.sleep(SAMPLE_EVERY)

    def _handle(self, conn, _address) -> None:
        conn.settimeout(control.ANSWER_WITHIN)
        try:
            if _peer_uid(conn) != os.getuid():
                return _send(conn, {"error": "this Pegasus belongs to another user"})
            _send(conn, self.answer(json.loads(control.read_line(conn))))
        except (OSError, ValueError):
            pass  # the client went away or sent nonsense: it gets no answer

    def answer(self, request: Dict) -> Dict:
        what = request.get("request") if isinstance(request, dict) else None
        if what == "status":
            return snapshot.status(self.loop, self.states)
        if what == "stop":
            return self.stop(bool(request.get("now")))
        if what == "kill" and isinstance(request.get("ids"), list):
            return self.kill([i for i in request["ids"] if isinstance(i, int)])
        return {"error": f"unknown request {what!r}"}

    def stop(self, now: bool) -> Dict:
        """The first Ctrl-c; ``now``: the second as well."""
        self.loop.run.sink.message(f"pegasus stop{' --now' if now else ''}: "
                                   "asked from another terminal")
        stopping = self.loop.state.name in ("STOPPING", "TERMINATING")
        if now or not stopping:  # stop: once only
            self.loop.signalled(Signal.CTRL_C, "pegasus stop", now=now)
        return {"stopped": True, "running": self.loop.scheduler.running}

    def kill(self, ids: List[int]) -> Dict:
        reply: AsyncResult = AsyncResult()
        self.loop.events.put(Request(lambda loop: reply.set(kill(loop, ids))))
        try:
            return reply.get(timeout=control.ANSWER_WITHIN - 1)
        except gevent.Timeout:
            return {"error": "the run did not act on the request (it may be ending)"}


def kill(loop, ids: List[int]) -> Dict:
    """In the loop: stop the jobs with these ids, or none if one does not run."""
    nodes_of: Dict[int, list] = {}
    for node, started in loop.jobs.running.items():
        nodes_of.setdefault(started.job.id, []).append(node)
    missing = [i for i in ids if i not in nodes_of]
    if missing or not ids:
        return {"not_running": missing, "running": sorted(nodes_of)}
    nodes = [node for i in ids for node in nodes_of[i]]
    labels = ", ".join(f"#{i} on {' '.join(n.label for n in nodes_of[i])}" for i in ids)
    loop.run.sink.message(f"pegasus kill: stopping {plural(len(ids), 'job')} ({labels}; "
                          f"TERM, then KILL {KILL_AFTER:g} s later)")
    loop.jobs.kill(nodes)
    return {"killed": ids}


def serve(loop) -> Optional[Server]:
    """Listen for status, stop and kill; None (said once) if it cannot."""
    path = ""
    try:
        where = control.folder(create=True)
        path = control.socket_path(loop.run.queue.path, os.getpid(), where)
        return Server(loop, path, _listener(path))
    except (PegasusError, OSError) as err:
        why = err if isinstance(err, PegasusError) else f"{path}: {err.strerror or err}"
        loop.run.sink.message(f"{why}\n(pegasus status, stop and kill cannot reach this run; "
                              "it goes on)")
        return None


def _listener(path: str) -> socket.socket:
    if len(path.encode()) >= 108:  # sun_path's size, with its NUL
        raise OSError(f"the path is too long for a socket ({len(path)} bytes); set "
                      "XDG_RUNTIME_DIR to a shorter folder")
    try:
        os.unlink(path)  # a socket with our pid is a dead process's (the pid came round)
    except FileNotFoundError:
        pass
    listener = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is born 0600, in a 0700 folder
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    listener.listen(16)
    return listener


def _peer_uid(conn) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _send(conn, answer: Dict) -> None:
    conn.sendall(json.dumps(answer).encode() + b"\n")
