"""Pegasus's SSH connection: parallel-ssh's native client, overridden where it falls short.

The only module that imports parallel-ssh (``pssh``) or ssh2-python
(``ssh2``), and the one to review against a new release of either (the
releases reviewed are ``REVIEWED``; tests/test_pssh_versions.py fails when
others are installed). ``Client`` adds host key checking (knownhosts.py),
ssh_config's identities and jump host, TCP_NODELAY and dead-peer detection,
the fastest cipher for the CPU, a cheaper socket wait, and the few channel operations ``pegasus.ssh`` uses.

What it relies on, beyond parallel-ssh's documented API:

parallel-ssh ``pssh.clients.native.single.SSHClient``
  - its constructor calls ``_init()``, which connects ``self.sock`` (a gevent
    socket), then calls ``_init_session()``, ``_auth_retry()`` (``auth()``) and
    the keepalive set-up, then makes the session non-blocking; kwargs
    ``num_retries``, ``allow_agent``, ``identity_auth``, ``keepalive_seconds``,
    ``proxy_host``/``proxy_port``/``proxy_user``
  - overridden: ``_init()`` (extended: closes the socket on failure),
    ``_init_session(retries)`` (must set ``self.session``), ``_auth_retry()``,
    ``_agent_auth()``, ``_pkey_file_auth(path)``,
    ``_poll_socket(events)`` (called by ``poll()`` with ``POLLIN``/``POLLOUT``
    bits while libssh2 says EAGAIN), ``_connect_proxy(proxy_host, proxy_port,
    proxy_pkey, **kwargs)`` (returns the local port of the tunnel), ``auth()``,
    ``configure_keepalive()`` (called once the session is up; uses
    ``keepalive_seconds``; parallel-ssh's greenlet then calls
    ``session.keepalive_send()``)
  - called: ``open_session()``
    (waits for a channel, and finishes an open that ``session.open_session()``
    left pending), ``eagain(func, *args)``, ``eagain_write(write, data)``
    (resumes partial writes), ``poll()``, ``_disconnect()`` (its public
    ``disconnect()`` is a no-op); attributes ``sock``, ``session``, ``host``,
    ``port``, ``allow_agent``, ``_proxy_client`` (which ``_disconnect`` hands
    back to the forwarder)
  - ``pssh.clients.native.single.FORWARDER`` (the jump host tunnels):
    ``started``, ``start()``, ``enqueue(client, host, port)``, ``out_q``
  - ``pssh/__init__.py`` sets ``__version__`` from ``pssh._version.get_versions()``
    (versioneer), which runs ``git`` six times when site-packages lies in a
    git work tree (a venv in a project's folder): ~25 ms of CPU at every
    start, for the version of the wrong project. Pegasus reads no version of
    parallel-ssh's (``REVIEWED`` is checked against the installed
    distribution), so it gives it a ``pssh._version`` that runs nothing
    (``_no_version_probe``): ``0+unknown``, versioneer's own answer outside
    a git tree
  - ``pssh.exceptions.AuthenticationError``; its error messages end in
    "- retry N/M" (``words`` drops it); its and ssh2's errors are classes of
    modules named ``pssh.*`` and ``ssh2.*`` (``link_errors``, ``words``)
ssh2-python
  - ``Session()``: ``set_blocking(False)`` before anything else, then (each
    EAGAIN until done: call again) ``handshake(sock)``,
    ``userauth_publickey_fromfile``, ``agent_init()`` (an ``Agent``:
    ``connect``, ``list_identities``, ``get_identities``, ``userauth``,
    ``disconnect``); ``method_pref(LIBSSH2_METHOD_HOSTKEY, ...)`` and
    ``method_pref(LIBSSH2_METHOD_CRYPT_CS/_SC, ...)`` (AES-GCM first on a CPU
    with AES instructions), ``supported_algs(LIBSSH2_METHOD_CRYPT_CS)``,
    ``keepalive_config(want_reply, seconds)``, ``hostkey()``,
    ``block_directions()``, and ``open_session()`` (a channel, or EAGAIN: the
    open stays pending in the session)
  - a channel's ``execute`` (EAGAIN until sshd confirms; call again to wait),
    ``write`` ((rc, bytes written)), ``read``/``read_stderr`` ((size, data),
    size < 0 an error, EAGAIN included), ``eof`` (false while data is held),
    ``send_eof``, ``close``,
    ``wait_closed``, ``get_exit_status``; ``LIBSSH2_ERROR_EAGAIN``
``sockwait`` waits on the socket (gevent's ``hub.loop.io``, ``hub.loop.timer``,
``hub.Waiter``) and wakes the other greenlets of a connection when a call read
from it; parallel-ssh's ``eagain``/``eagain_write`` are wrapped for that.
"""

from __future__ import annotations

import functools
import os
import re
import struct
import socket
import sys
import types
from contextlib import contextmanager
from typing import List, Optional, Sequence, Tuple

import gevent
from gevent import select as gselect
from ssh2.error_codes import LIBSSH2_ERROR_EAGAIN
from ssh2.session import (LIBSSH2_METHOD_CRYPT_CS, LIBSSH2_METHOD_CRYPT_SC,
                          LIBSSH2_METHOD_HOSTKEY, Session)

from pegasus import knownhosts, sockwait
from pegasus.executor import CHUNK, ConnectionLost, Emit
from pegasus.sshconfig import SshTarget


@contextmanager
def _no_version_probe():
    """parallel-ssh imported without asking ``git`` its version (see above): its
    ``pssh._version`` is a stand-in while it imports, then gone again."""
    if "pssh" in sys.modules:
        yield
        return
    probe = types.ModuleType("pssh._version")
    probe.get_versions = lambda: {"version": "0+unknown"}  # type: ignore[attr-defined]
    sys.modules["pssh._version"] = probe
    try:
        yield
    finally:
        if sys.modules.get("pssh._version") is probe:
            del sys.modules["pssh._version"]


with _no_version_probe():
    from pssh.clients.native.single import SSHClient
    from pssh.exceptions import AuthenticationError

# The releases this module was reviewed against; pyproject.toml pins them.
REVIEWED = {"parallel-ssh": "2.16.0.post1", "ssh2-python": "1.2.0.post1"}

__all__ = ["AuthenticationError", "Client", "REVIEWED", "link_errors", "open_client", "words"]


class Client(SSHClient):
    """parallel-ssh's native client plus host key checking and TCP_NODELAY."""

    def __init__(self, target: SshTarget, **kwargs):
        self.target = target
        self.waits = sockwait.Socket()  # the greenlets waiting on this connection's socket
        super().__init__(target.hostname, **kwargs)

    # -- parallel-ssh's internals, overridden

    def _init(self):
        """Connect, handshake, authenticate; on any failure (a timeout included)
        the socket is closed at once, so nothing is left waiting on it."""
        try:
            super()._init()
        except BaseException:
            self._close_socket()
            raise

    def _init_session(self, retries=1):
        _tune_socket(self.sock)
        self.session = Session()
        # Non-blocking from the start: the handshake and the login wait in gevent,
        # so a host that accepts TCP and never answers holds no thread (parallel-ssh
        # blocks one of gevent's ten shared threads per handshake).
        self.session.set_blocking(False)
        prefs = _host_key_prefs(self.target)
        if prefs:
            self.session.method_pref(LIBSSH2_METHOD_HOSTKEY, prefs)
        ciphers = cipher_prefs(_cpu_flags(), self.session.supported_algs(LIBSSH2_METHOD_CRYPT_CS))
        if ciphers:
            for method in (LIBSSH2_METHOD_CRYPT_CS, LIBSSH2_METHOD_CRYPT_SC):
                self.session.method_pref(method, ciphers)
        self.eagain(self.session.handshake, self.sock)
        _verify_host_key(self.session, self.target)

    def configure_keepalive(self):
        """Keepalives that want a reply (``keepalive@openssh.com``, as OpenSSH's
        ServerAliveInterval): sshd itself answers, so ``silent_for`` tells a hung
        host (the kernel still acknowledges TCP) from a quiet one."""
        self.session.keepalive_config(True, self.keepalive_seconds)

    def _poll_socket(self, events):
        """Wait until the socket is ready for libssh2, another greenlet read from
        it, or 1 s at most, as parallel-ssh does, but without its poll object and
        gevent.Timeout a call: that halves Pegasus's CPU time a job."""
        if self.sock is not None:
            self.waits.wait(self.sock, bool(events & gselect.POLLIN),
                            bool(events & gselect.POLLOUT))

    def eagain(self, func, *args, **kwargs):
        with self.waits.after(self.sock):
            return super().eagain(func, *args, **kwargs)

    def eagain_write(self, write_func, data):
        with self.waits.after(self.sock):
            return super().eagain_write(write_func, data)

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
        tried = []
        if self.allow_agent:
            try:
                return self._agent_auth()
            except Exception:  # noqa: BLE001 - next method
                tried.append("the agent's keys")
        for path in self.target.identity_files:
            try:
                return self._pkey_file_auth(path)
            except Exception:  # noqa: BLE001 - next key
                tried.append(path)
        raise AuthenticationError("no key was accepted (tried " + ", ".join(tried or
                                  ["nothing: no agent and no IdentityFile"]) + ")")

    def _auth_retry(self, retries=1):
        """Authenticate once, our error unwrapped (Pegasus retries on its own)."""
        self.auth()

    def _agent_auth(self):
        """Each of the agent's keys in turn, without blocking (the agent is local)."""
        agent = self.session.agent_init()
        agent.connect()
        try:
            agent.list_identities()
            for key in agent.get_identities():
                try:
                    return self.eagain(agent.userauth, self.user, key)
                except Exception:  # noqa: BLE001 - the next key
                    continue
            raise AuthenticationError("the agent has no key the host accepts")
        finally:
            agent.disconnect()

    def _pkey_file_auth(self, pkey_file, password=None):
        self.eagain(self.session.userauth_publickey_fromfile, self.user, pkey_file,
                    passphrase=b"")

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
        """Read raw stdout and stderr until both end (no line splitting here).

        Each read takes in every packet that came, the other stream's too, so
        the socket is waited on only when no read of this round took bytes
        from it (``sockwait.none_read_since``): a job's last packets, taken in
        by the other stream's read, woke no wait and cost the wait's bound,
        1 s, now and then (issue 16's run-to-run variance). stdout is read
        first: what a round finds of both streams is emitted in that order."""
        readers = {"stdout": channel.read, "stderr": channel.read_stderr}
        while readers:
            with self.waits.after(self.sock):
                progressed, mark = _read_round(self, channel, readers, emit)
            # A later stream's read drains the socket into libssh2's buffer: data or
            # the end of a stream already asked may now wait there, not on the socket.
            if not progressed and readers and sockwait.none_read_since(mark, self.sock):
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
        sock = getattr(self, "sock", None)
        try:
            sock.close()
        except Exception:  # noqa: BLE001 - already closed, or never made
            pass

    def how_it_ended(self) -> Optional[str]:
        """How a broken connection ended, from the kernel's TCP state, or None."""
        try:
            state = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        except (OSError, AttributeError):
            return None
        return _ENDED.get(state)

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


_ENDED = {8: "the host closed the connection",  # TCP_CLOSE_WAIT: the host's FIN came
          7: "the connection was reset or timed out"}  # TCP_CLOSE: a reset, a TCP timeout
_LAST_DATA_RECV = 52  # struct tcp_info: 8 bytes of u8 fields, then u32 fields up to it


def _read_round(client: Client, channel, readers, emit: Emit):
    """Each stream read once: (whether any gave data, the socket's count of
    bytes read after the first that had none)."""
    progressed, mark = False, None
    for name in list(readers):
        size, data = readers[name](CHUNK)
        if size > 0:
            emit(name, data)
            progressed = True
        elif size == LIBSSH2_ERROR_EAGAIN:
            mark = sockwait.consumed(client.sock) if mark is None else mark
        elif size == 0:
            if channel.eof():
                del readers[name]
        else:
            raise ConnectionLost(client.how_it_ended() or "the connection broke while reading")
    return progressed, mark


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


# With AES instructions, AES-GCM decrypts at about twice the speed of libssh2's
# first choice, chacha20-poly1305 (0.4 against 0.8 CPU s for 100 MB here): most
# of the CPU of a job with much output. Each is one of OpenSSH's default ciphers.
AES_FIRST = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
             "chacha20-poly1305@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr")


def cipher_prefs(cpu_flags: Sequence[str], supported: Sequence[str]) -> str:
    """The ciphers to offer, best first: AES-GCM first on a CPU with AES
    instructions; "" (libssh2's own order) on others."""
    if "aes" not in cpu_flags:
        return ""
    return ",".join(c for c in AES_FIRST if c in supported)


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> Tuple[str, ...]:
    """The CPU's feature flags (Linux: x86 ``flags``, Arm ``Features``), or ()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    return tuple(value.split())
    except OSError:
        pass
    return ()


def _key_host(target: SshTarget) -> str:
    return target.host_key_alias or target.hostname


def _verify_host_key(session, target: SshTarget) -> None:
    blob, _ = session.hostkey()
    host = _key_host(target)
    knownhosts.check_host_key(host, target.port, bytes(blob), target.known_hosts_files,
                              target.strict_host_key_checking, target.hash_known_hosts,
                              alias_for_messages=target.alias, other_type_is_change=True)


@contextmanager
def link_errors(kind, client: Optional[Client] = None):
    """libssh2 and socket errors mean the connection is gone: raise `kind`, in words
    (how it ended, when ``client``'s socket tells)."""
    try:
        yield
    except (OSError, gevent.Timeout) as err:
        raise kind(_ended(err, client)) from None
    except Exception as err:  # noqa: BLE001 - only ssh2/pssh errors are turned
        if err.__class__.__module__.startswith(("ssh2", "pssh")):
            raise kind(_ended(err, client)) from None
        raise


def _ended(err: Exception, client: Optional[Client]) -> str:
    how = client.how_it_ended() if client is not None else None
    return how or words(err)


def words(err: Exception) -> str:
    """An error's message, with parallel-ssh's %-style arguments filled in; libssh2's
    errors (which have none) in words, never a class name."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    if isinstance(err, gevent.Timeout):
        return "no answer (timed out)"
    args = [a for a in getattr(err, "args", ()) if isinstance(a, (str, int, Exception))]
    args = [words(a) if isinstance(a, Exception) else a for a in args]
    text = " ".join(str(a) for a in args)
    if args and isinstance(args[0], str) and "%" in args[0]:
        try:
            text = args[0] % tuple(args[1:args[0].count("%") + 1])
        except (TypeError, ValueError):
            pass
    # parallel-ssh counts its own tries ("- retry 1/1"); Pegasus retries on its own
    return _PSSH_RETRY.sub("", text).strip() or _class_words(type(err).__name__)


def _class_words(name: str) -> str:
    """libssh2's error kinds (ssh2-python's classes carry no message) in words."""
    if name in _SSH2_WORDS:
        return _SSH2_WORDS[name]
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", re.sub(r"Error$", "", name)).lower()
    return f"SSH error ({spaced})"


_SSH2_WORDS = {
    "SocketRecvError": "the connection broke while reading",
    "SocketSendError": "the connection broke while writing",
    "SocketDisconnectError": "the connection was closed",
    "BadSocketError": "the connection was closed",
    "SocketTimeout": "no answer (timed out)",
    "Timeout": "no answer (timed out)",
    "BannerRecvError": "no SSH greeting from the host (is it an SSH server?)",
    "KexFailureError": "no key exchange method in common with the host",
    "KeyExchangeError": "the key exchange with the host failed",
    "ChannelFailure": "the host refused to open a channel",
    "ChannelRequestDenied": "the host refused to run the command",
    "ChannelClosedError": "the host closed the channel",
    "PublickeyUnverifiedError": "the key was refused",
    "AuthenticationError": "the key was refused",
    "PublicKeyError": "the key was refused",
    "AgentAuthenticationError": "the agent's keys were refused",
}


_PSSH_RETRY = re.compile(r"\s*-\s*retry \d+/\d+\s*$")
