"""Pegasus's SSH connection: parallel-ssh's native client, overridden where it falls short.

The only module that imports parallel-ssh (``pssh``) or ssh2-python
(``ssh2``), and the one to review against a new release of either (the
releases reviewed are ``REVIEWED``; tests/test_pssh_versions.py fails when
others are installed). ``Client`` adds host key checking (knownhosts.py),
ssh_config's identities and jump host, TCP_NODELAY and dead-peer detection,
a cheaper socket wait, and the few channel operations ``pegasus.ssh`` uses.

What it relies on, beyond parallel-ssh's documented API:

parallel-ssh ``pssh.clients.native.single.SSHClient``
  - its constructor connects ``self.sock``, then calls ``_init_session()``,
    ``auth()`` and the keepalive set-up, then makes the session non-blocking;
    kwargs ``num_retries``, ``allow_agent``, ``identity_auth``,
    ``keepalive_seconds``, ``proxy_host``/``proxy_port``/``proxy_user``
  - overridden: ``_init_session(retries)`` (must set ``self.session``),
    ``_poll_socket(events)`` (called by ``poll()`` with ``POLLIN``/``POLLOUT``
    bits while libssh2 says EAGAIN), ``_connect_proxy(proxy_host, proxy_port,
    proxy_pkey, **kwargs)`` (returns the local port of the tunnel), ``auth()``,
    ``configure_keepalive()`` (called once the session is up; uses
    ``keepalive_seconds``; parallel-ssh's greenlet then calls
    ``session.keepalive_send()``)
  - called: ``_agent_auth()``, ``_pkey_file_auth(path)``, ``open_session()``
    (waits for a channel, and finishes an open that ``session.open_session()``
    left pending), ``eagain(func, *args)``, ``eagain_write(write, data)``
    (resumes partial writes), ``poll()``, ``_disconnect()`` (its public
    ``disconnect()`` is a no-op); attributes ``sock``, ``session``, ``host``,
    ``port``, ``allow_agent``, ``_proxy_client`` (which ``_disconnect`` hands
    back to the forwarder)
  - ``pssh.clients.native.single.FORWARDER`` (the jump host tunnels):
    ``started``, ``start()``, ``enqueue(client, host, port)``, ``out_q``
  - ``pssh.exceptions.AuthenticationError``; its error messages end in
    "- retry N/M" (``words`` drops it); its and ssh2's errors are classes of
    modules named ``pssh.*`` and ``ssh2.*`` (``link_errors``)
ssh2-python
  - ``Session()``: ``method_pref(LIBSSH2_METHOD_HOSTKEY, ...)``,
    ``keepalive_config(want_reply, seconds)``,
    ``handshake(sock)`` (blocking: run in gevent's thread pool), ``hostkey()``,
    and, non-blocking, ``open_session()`` (a channel, or EAGAIN: the open stays
    pending in the session)
  - a channel's ``execute`` (EAGAIN until sshd confirms; call again to wait),
    ``write`` ((rc, bytes written)), ``read``/``read_stderr`` ((size, data),
    size < 0 an error, EAGAIN included), ``eof``, ``send_eof``, ``close``,
    ``wait_closed``, ``get_exit_status``; ``LIBSSH2_ERROR_EAGAIN``
gevent (public API): ``hub.loop.io``, ``hub.loop.timer``, ``hub.Waiter``,
``hub.threadpool.apply``.
"""

from __future__ import annotations

import os
import re
import struct
import socket
from contextlib import contextmanager
from typing import List, Optional

import gevent
from gevent import select as gselect
from gevent.hub import Waiter
from pssh.clients.native.single import SSHClient
from pssh.exceptions import AuthenticationError
from ssh2.error_codes import LIBSSH2_ERROR_EAGAIN
from ssh2.session import LIBSSH2_METHOD_HOSTKEY, Session

from pegasus import knownhosts
from pegasus.executor import CHUNK, ConnectionLost, Emit
from pegasus.sshconfig import SshTarget

# The releases this module was reviewed against; pyproject.toml pins them.
REVIEWED = {"parallel-ssh": "2.16.0.post1", "ssh2-python": "1.2.0.post1"}

__all__ = ["AuthenticationError", "Client", "REVIEWED", "link_errors", "open_client", "words"]

_EV_READ, _EV_WRITE = 1, 2  # libev's event bits, for gevent's loop.io()


class Client(SSHClient):
    """parallel-ssh's native client plus host key checking and TCP_NODELAY."""

    def __init__(self, target: SshTarget, **kwargs):
        self.target = target
        super().__init__(target.hostname, **kwargs)

    # -- parallel-ssh's internals, overridden

    def _init_session(self, retries=1):
        _tune_socket(self.sock)
        self.session = Session()
        prefs = _host_key_prefs(self.target)
        if prefs:
            self.session.method_pref(LIBSSH2_METHOD_HOSTKEY, prefs)
        # The handshake blocks in libssh2: run it in a thread, as parallel-ssh does.
        gevent.get_hub().threadpool.apply(self.session.handshake, (self.sock,))
        _verify_host_key(self.session, self.target)

    def configure_keepalive(self):
        """Keepalives that want a reply (``keepalive@openssh.com``, as OpenSSH's
        ServerAliveInterval): sshd itself answers, so ``silent_for`` tells a hung
        host (the kernel still acknowledges TCP) from a quiet one."""
        self.session.keepalive_config(True, self.keepalive_seconds)

    def _poll_socket(self, events):
        """Wait until the socket is ready for libssh2, or 1 s at most, as
        parallel-ssh does, but without its poll object and gevent.Timeout a
        call: that halves Pegasus's CPU time a job (0.5 -> 0.25 ms here)."""
        sock = self.sock
        if sock is None:
            return
        hub = gevent.get_hub()
        io = hub.loop.io(sock.fileno(), (_EV_READ if events & gselect.POLLIN else 0)
                         | (_EV_WRITE if events & gselect.POLLOUT else 0))
        timer = hub.loop.timer(1.0)
        waiter = Waiter(hub)
        io.start(waiter.switch, None)
        timer.start(waiter.switch, None)
        try:
            waiter.get()
        finally:
            io.close()
            timer.close()

    def _connect_proxy(self, proxy_host, proxy_port, proxy_pkey, **kwargs):
        # Same as parallel-ssh's, but the bastion's key is checked too.
        from pssh.clients.native.single import FORWARDER
        self._proxy_client = open_client(self.target.proxy_jump)
        if not FORWARDER.started.is_set():
            FORWARDER.start()
            FORWARDER.started.wait()
        FORWARDER.enqueue(self._proxy_client, self.host, self.port)
        return FORWARDER.out_q.get()

    def auth(self):
        """Agent keys (unless IdentitiesOnly), then each IdentityFile."""
        failures = []
        if self.allow_agent:
            try:
                return self._agent_auth()
            except Exception as err:  # noqa: BLE001 - next method
                failures.append(f"agent: {err.__class__.__name__}")
        for path in self.target.identity_files:
            try:
                return self._pkey_file_auth(path)
            except Exception as err:  # noqa: BLE001 - next key
                failures.append(f"{path}: {err.__class__.__name__}")
        raise AuthenticationError("no key was accepted (" + ", ".join(failures or
                                  ["no agent and no IdentityFile"]) + ")")

    # -- what pegasus.ssh uses: channels (ssh2 Channel objects)

    def channel(self):
        """A new channel, or the one ``ask_for_channel`` left pending, once open."""
        return self.open_session()

    def ask_for_channel(self):
        """Send a channel-open request without waiting: a channel, or None."""
        channel = self.session.open_session()
        return None if isinstance(channel, int) else channel

    def send_exec(self, channel, exec_string: str) -> bool:
        """Send an exec request without waiting; whether sshd already confirmed it."""
        return channel.execute(exec_string) != LIBSSH2_ERROR_EAGAIN

    def run_exec(self, channel, exec_string: str) -> None:
        """Send an exec request (again, if ``send_exec`` was not confirmed) and wait."""
        self.eagain(channel.execute, exec_string)

    def write(self, channel, data: bytes) -> None:
        self.eagain_write(channel.write, data)

    def send_eof(self, channel) -> None:
        self.eagain(channel.send_eof)

    def read(self, channel, emit: Emit) -> None:
        """Read raw stdout and stderr until both end (no line splitting here)."""
        readers = {"stdout": channel.read, "stderr": channel.read_stderr}
        while readers:
            progressed = False
            for name in list(readers):
                size, data = readers[name](CHUNK)
                if size > 0:
                    emit(name, data)
                    progressed = True
                elif size == LIBSSH2_ERROR_EAGAIN:
                    continue
                elif size == 0:
                    if channel.eof():
                        del readers[name]
                else:
                    raise ConnectionLost(f"read error {size}")
            if not progressed and readers:
                self.poll()
            elif progressed:
                gevent.sleep(0)

    def exit_status(self, channel) -> int:
        """Close the channel, wait for sshd's close, and return the exit status."""
        self.eagain(channel.close)
        self.eagain(channel.wait_closed)
        return channel.get_exit_status()

    def close_connection(self) -> None:
        """Say goodbye if the host listens within a second; never raises."""
        try:
            with gevent.Timeout(1.0):
                self._disconnect()
        except (Exception, gevent.Timeout):  # noqa: BLE001 - a dead or hung connection
            self._close_socket()

    def _close_socket(self) -> None:
        try:
            self.sock.close()
        except Exception:  # noqa: BLE001 - already closed
            pass

    def silent_for(self) -> Optional[float]:
        """Seconds since the host last sent anything (the kernel's TCP_INFO), or
        None where that cannot be known (a ProxyJump's local forwarder, not Linux)."""
        if self._proxy_client is not None or not hasattr(socket, "TCP_INFO"):
            return None
        try:
            info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        except (OSError, AttributeError):
            return None
        return struct.unpack_from("I", info, _LAST_DATA_RECV)[0] / 1000.0


_LAST_DATA_RECV = 52  # struct tcp_info: 8 bytes of u8 fields, then u32 fields up to it


def keepalive_every(target: SshTarget) -> int:
    """Seconds between keepalives: ServerAliveInterval, but at most 10 s, so a host
    that answers is heard from well within ``NOT_RESPONDING`` (30 s). BatchMode
    alone makes ``ssh -G`` say 300 s on Debian; 60 s is common in configs."""
    return min(target.server_alive_interval or KEEPALIVE_MAX, KEEPALIVE_MAX)


KEEPALIVE_MAX = 10


def open_client(target: SshTarget) -> Client:
    """Connect, check the host key and authenticate (parallel-ssh does it all at once)."""
    kwargs = dict(user=target.user, port=target.port, num_retries=1,
                  allow_agent=bool(os.environ.get("SSH_AUTH_SOCK"))
                  and not target.identities_only,
                  identity_auth=False, keepalive_seconds=keepalive_every(target))
    if target.proxy_jump is not None:
        jump = target.proxy_jump
        kwargs.update(proxy_host=jump.hostname, proxy_port=jump.port, proxy_user=jump.user)
    return Client(target, **kwargs)


def _tune_socket(sock) -> None:
    """No Nagle delay (40 ms a command otherwise); notice dead peers."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 20_000)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


_HOST_KEY_METHODS = {
    "ssh-ed25519": ["ssh-ed25519"],
    "ecdsa-sha2-nistp256": ["ecdsa-sha2-nistp256"],
    "ecdsa-sha2-nistp384": ["ecdsa-sha2-nistp384"],
    "ecdsa-sha2-nistp521": ["ecdsa-sha2-nistp521"],
    "ssh-rsa": ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
}


def _host_key_prefs(target: SshTarget) -> str:
    """Prefer the key types known_hosts already has for this host."""
    known = knownhosts.known_key_types(_key_host(target), target.port,
                                       target.known_hosts_files)
    first: List[str] = [m for t in known for m in _HOST_KEY_METHODS.get(t, [])]
    if not first:
        return ""
    rest = [m for ms in _HOST_KEY_METHODS.values() for m in ms if m not in first]
    return ",".join(first + rest)


def _key_host(target: SshTarget) -> str:
    return target.host_key_alias or target.hostname


def _verify_host_key(session, target: SshTarget) -> None:
    blob, _ = session.hostkey()
    host = _key_host(target)
    knownhosts.check_host_key(host, target.port, bytes(blob), target.known_hosts_files,
                              target.strict_host_key_checking, target.hash_known_hosts,
                              alias_for_messages=target.alias, other_type_is_change=True)


@contextmanager
def link_errors(kind):
    """libssh2 and socket errors mean the connection is gone: raise `kind`."""
    try:
        yield
    except (OSError, gevent.Timeout) as err:
        raise kind(words(err)) from None
    except Exception as err:  # noqa: BLE001 - only ssh2/pssh errors are turned
        if err.__class__.__module__.startswith(("ssh2", "pssh")):
            raise kind(f"{err.__class__.__name__} {words(err)}") from None
        raise


def words(err: Exception) -> str:
    """An error's message, with parallel-ssh's %-style arguments filled in."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    args = [a for a in getattr(err, "args", ()) if isinstance(a, (str, int, Exception))]
    text = " ".join(str(a) for a in args) or err.__class__.__name__
    if args and isinstance(args[0], str) and "%" in args[0]:
        try:
            text = args[0] % tuple(args[1:args[0].count("%") + 1])
        except (TypeError, ValueError):
            pass
    # parallel-ssh counts its own tries ("- retry 1/1"); Pegasus retries on its own
    return _PSSH_RETRY.sub("", text).strip()


_PSSH_RETRY = re.compile(r"\s*-\s*retry \d+/\d+\s*$")
