"""Run one rendered command on one sub-node: over SSH or as a local process.

Both executors share one small interface: ``run(command, emit, launching)``
runs ``sh -c command``, calls ``launching()`` just before the command is
sent, ``emit(stream_name, chunk)`` with raw bytes as they arrive, and returns
the exit status; ``cancel()`` asks the running command to stop (TERM to its
process group, KILL a few seconds later); ``close()`` frees the connection.
They block only the calling greenlet (parallel-ssh and gevent.subprocess wait
cooperatively); they spawn nothing.

Remote commands run under a small POSIX sh wrapper (``WRAPPER``). sshd starts
every session in a new session and process group, led by the login shell it
runs; that shell runs the wrapper (a login shell outside the sh family execs
``sh`` for it first), so the wrapper, the job and everything the job starts
share one process group that nothing else is in. The job itself runs as
``sh -c command``. A watchdog subshell reads the channel's stdin, where
Pegasus writes a line every ``HEARTBEAT`` seconds (``heartbeat()``). At
end-of-file, or after ``SILENCE`` seconds without a line, it sends TERM and,
``KILL_AFTER`` seconds later, KILL to the group. Closing stdin is how Pegasus
cancels a job; a Pegasus that dies closes it too, and one that is cut off
(network partition, laptop asleep) stops sending lines, so no remote job
outlives it by more than a few seconds. A job that ended on its own leaves its
background processes alone. The wrapper exits with the job's status, 128+N
when a signal killed it (parallel-ssh alone reports 0).
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shlex
import signal
import socket
from contextlib import contextmanager
from typing import Callable, List

import gevent
from gevent import select as gselect
from gevent import subprocess
from gevent.hub import Waiter
from pssh.clients.native.single import SSHClient
from pssh.exceptions import AuthenticationError
from ssh2.error_codes import LIBSSH2_ERROR_EAGAIN
from ssh2.session import LIBSSH2_METHOD_HOSTKEY, Session

from pegasus import faults, knownhosts
from pegasus.errors import HostAuthError, HostError, HostKeyError
from pegasus.sshconfig import SshTarget

Emit = Callable[[str, bytes], None]
CHUNK = 65536
CONNECT_TRIES = 6  # sshd's MaxStartups drops some handshakes under load
_EV_READ, _EV_WRITE = 1, 2  # libev's event bits, for gevent's loop.io()


class NotStarted(Exception):
    """The command could not be sent: it did not run."""


class ConnectionLost(Exception):
    """The connection died while a job ran: its outcome is unknown."""


KILL_AFTER = 3  # seconds between TERM and KILL when a job is cancelled
HEARTBEAT = 1.0  # seconds between the lines Pegasus writes to a remote job's stdin
SILENCE = 4  # seconds without a line after which the remote watchdog stops the job

WRAPPER = f"""exec 3<&0 </dev/null
nl='
' command= sep=
while :; do
  IFS= read -r line <&3 || exit 0
  [ "$line" = {{nonce}} ] && break
  command=$command$sep$line sep=$nl
done
(trap '' TERM
 stop() {{ trap '' TERM; kill -0 "$$" 2>/dev/null || exit 0
   kill -s TERM -- "-$$"; sleep {KILL_AFTER - 1}; kill -s USR1 "$$"
   sleep 1; kill -s KILL -- "-$$"; }}
 (trap - TERM; sleep {SILENCE}; stop) & timer=$!
 while read -r _ <&3; do
   kill "$timer"; (trap - TERM; sleep {SILENCE}; stop) & timer=$!
 done
 kill "$timer"; stop) >/dev/null 2>&1 &
exec 3<&- 4>&2 2>/dev/null
trap 'stopping=1' TERM
trap '[ -z "$stopping" ] || exit 137' USR1
sh -c "$command" 2>&4 4>&- & job=$!
wait "$job"; status=$?
while kill -0 "$job"; do wait "$job"; status=$?; done
exit "$status"
"""
# How it works, line by line. The wrapper is started before its job is known
# (while Pegasus updates the queue file) and reads the command from the
# channel's stdin: its lines, then a line with the channel's random nonce. It
# runs nothing if the channel ends first. After that, the channel's stdin is
# fd 3, for the watchdog only. The watchdog ignores the TERM it sends to the
# group; its timers do not, so ``kill "$timer"`` restarts the silence clock.
# ``kill -0 "$$"`` after end-of-file tells a cancelled job (the wrapper still
# runs) from one that has ended (its background processes are left alone).
# The wrapper itself must never die of a signal: ssh2-python cannot read the
# SSH exit-signal message, so that would read as exit 0. It survives the
# group's TERM (trap) and reports the job's status; when the job ignores TERM,
# the watchdog's USR1 makes it report 137 a second before the group's KILL.
# ``wait`` returns early when a trap runs, hence the loop. The wrapper's own
# stderr goes to /dev/null (the job's is the channel's, through fd 4): shells
# print "Killed" notices for a background job at moments of their choosing,
# and Pegasus reports the signal itself. The job runs in the background so
# that the traps run while it is still running.

# Login shells that run the wrapper as POSIX sh; any other (fish, csh, ...)
# execs ``sh`` to run it, which costs a process start a job.
POSIX_LOGIN_SHELLS = frozenset({"sh", "dash", "bash", "ksh", "mksh", "ash"})


def shell_command(nonce: str, posix_login_shell: bool = False) -> str:
    """The exec string of a wrapper that waits for its command (``command_input``)."""
    script = WRAPPER.replace("{nonce}", nonce)
    if posix_login_shell:
        return script
    return f"exec sh -c {shlex.quote(script)}"


def command_input(command: str, nonce: str) -> bytes:
    """What the wrapper reads: the command's lines, then the nonce's line."""
    return f"{command}\n{nonce}\n".encode("utf-8", "surrogateescape")


def new_nonce() -> str:
    return "pegasus-" + secrets.token_hex(12)


def _nothing() -> None:
    """Default ``launching`` callback."""


# ---------------------------------------------------------------- local

class LocalExecutor:
    """Runs jobs as local subprocesses (``localhost``, ``127.0.0.1``, ``::1``)."""

    def __init__(self):
        self.proc = None

    def run(self, command: str, emit: Emit, launching: Callable[[], None] = _nothing) -> int:
        launching()
        try:
            self.proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         start_new_session=True)  # Ctrl-c stays here
        except OSError as err:
            raise NotStarted(err.strerror) from None
        faults.point("exec-sent")
        try:
            _pump(self.proc, emit)
            status = self.proc.wait()
        finally:
            self.proc = None
        return 128 - status if status < 0 else status

    def heartbeat(self) -> None:
        """Local jobs need none."""

    def cancel(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, number: int) -> None:
        proc = self.proc
        if proc is not None:
            try:
                os.killpg(proc.pid, number)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        pass


def _pump(proc, emit: Emit) -> None:
    names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
    files = {proc.stdout.fileno(): proc.stdout, proc.stderr.fileno(): proc.stderr}
    while names:
        ready, _, _ = gselect.select(list(names), [], [])
        for fd in ready:
            data = os.read(fd, CHUNK)
            if data:
                emit(names[fd], data)
            else:
                del names[fd]
                files[fd].close()


# ---------------------------------------------------------------- ssh

class _Client(SSHClient):
    """parallel-ssh's native client plus host key checking and TCP_NODELAY."""

    def __init__(self, target: SshTarget, **kwargs):
        self.target = target
        super().__init__(target.hostname, **kwargs)

    def _init_session(self, retries=1):
        _tune_socket(self.sock)
        self.session = Session()
        prefs = _host_key_prefs(self.target)
        if prefs:
            self.session.method_pref(LIBSSH2_METHOD_HOSTKEY, prefs)
        # The handshake blocks in libssh2: run it in a thread, as parallel-ssh does.
        gevent.get_hub().threadpool.apply(self.session.handshake, (self.sock,))
        _verify_host_key(self.session, self.target)

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
        self._proxy_client = _open_client(self.target.proxy_jump)
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


def _open_client(target: SshTarget) -> _Client:
    kwargs = dict(user=target.user, port=target.port, num_retries=1,
                  allow_agent=bool(os.environ.get("SSH_AUTH_SOCK"))
                  and not target.identities_only,
                  identity_auth=False, keepalive_seconds=target.server_alive_interval or 10)
    if target.proxy_jump is not None:
        jump = target.proxy_jump
        kwargs.update(proxy_host=jump.hostname, proxy_port=jump.port, proxy_user=jump.user)
    return _Client(target, **kwargs)


def connect(target: SshTarget) -> "SshExecutor":
    """Open and authenticate one connection, retrying refused handshakes."""
    timeout = target.connect_timeout or 30
    delay = 0.1
    for attempt in range(1, CONNECT_TRIES + 1):
        try:
            with gevent.Timeout(timeout, TimeoutError):
                client = _open_client(target)
                return SshExecutor(client, _posix_login_shell(client))
        except HostKeyError:
            raise
        except TimeoutError:
            raise HostError(target.alias, f"no answer from {target.hostname}:"
                            f"{target.port} within {timeout:g} s") from None
        except AuthenticationError as err:
            raise HostAuthError(target.alias, f"authentication as '{target.user}' "
                            f"failed: {_words(err)}") from None
        except Exception as err:  # noqa: BLE001 - turned into words below
            if attempt == CONNECT_TRIES or isinstance(err, HostError):
                raise HostError(target.alias, f"cannot connect to {target.hostname}:"
                                f"{target.port}: {_words(err)}") from None
            gevent.sleep(delay * (1 + random.random()))
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def _posix_login_shell(client: _Client) -> bool:
    """Whether the user's login shell can run the wrapper itself (one probe a connection)."""
    out = bytearray()

    def keep(name: str, data: bytes) -> None:
        if name == "stdout" and len(out) < 4096:
            out.extend(data)

    channel = client.open_session()
    client.eagain(channel.execute, 'echo "$SHELL"')
    _read_channel(client, channel, keep)
    client.eagain(channel.close)
    client.eagain(channel.wait_closed)
    return _says_posix_login_shell(channel.get_exit_status(), bytes(out))


def _says_posix_login_shell(status: int, output: bytes) -> bool:
    """The probe's answer: one word, a shell of the sh family (else: exec sh)."""
    words = output.split()
    return status == 0 and len(words) == 1 and \
        os.path.basename(words[0]).decode("ascii", "replace") in POSIX_LOGIN_SHELLS


def _words(err: Exception) -> str:
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


class SshExecutor:
    """Runs jobs as channels of one open SSH connection (one job at a time).

    The next job's wrapper is always started already (``waiting``): its
    channel is asked for while a job runs and its exec is sent when the job
    ends, so sshd and the login shell start while the loop takes the next
    entry; ``run`` then only sends the command.
    """

    def __init__(self, client: _Client, posix_login_shell: bool = False):
        self.client = client
        self.posix_login_shell = posix_login_shell
        self.channel = None  # the running job's, once its command is sent
        self.cancelled = False
        self.waiting = None  # (channel, nonce, exec string or None once started)
        self._start_wrapper()

    def run(self, command: str, emit: Emit, launching: Callable[[], None] = _nothing) -> int:
        client = self.client
        self.cancelled = False
        with _link_errors(NotStarted):
            channel, nonce = self._started_wrapper()
        launching()
        with _link_errors(ConnectionLost):
            try:
                client.eagain_write(channel.write, command_input(command, nonce))
                faults.point("exec-sent")
                self.channel = channel
                if self.cancelled:
                    client.eagain(channel.send_eof)
                asked = self._ask_for_channel()  # sshd answers while the job runs
                _read_channel(client, channel, emit)
                client.eagain(channel.close)
                client.eagain(channel.wait_closed)
                status = channel.get_exit_status()
            finally:
                self.channel = None
        self._start_wrapper(asked)
        return status

    def _ask_for_channel(self):
        """Send a channel-open request without waiting: a channel, or EAGAIN."""
        try:
            return self.client.session.open_session()
        except Exception:  # noqa: BLE001 - _start_wrapper opens one itself
            return None

    def _start_wrapper(self, asked=None) -> None:
        """Open the next job's channel (or finish opening ``asked``) and send
        its exec now: sshd starts the wrapper while the loop updates the queue
        file and the journal."""
        self.waiting = None
        try:
            if asked is None or isinstance(asked, int):
                asked = self.client.open_session()  # also finishes a pending open
            channel = asked
            nonce = new_nonce()
            exec_string = shell_command(nonce, self.posix_login_shell)
            if channel.execute(exec_string) != LIBSSH2_ERROR_EAGAIN:
                exec_string = None  # already confirmed
            self.waiting = (channel, nonce, exec_string)
        except Exception:  # noqa: BLE001 - the next job tries again and says why
            self.waiting = None

    def _started_wrapper(self):
        """The waiting wrapper's channel and nonce."""
        waiting, self.waiting = self.waiting, None
        if waiting is None:  # starting it failed: once more, to say why
            channel, nonce = self.client.open_session(), new_nonce()
            self.client.eagain(channel.execute, shell_command(nonce, self.posix_login_shell))
            return channel, nonce
        channel, nonce, pending = waiting
        if pending is not None:
            self.client.eagain(channel.execute, pending)  # wait for sshd's reply
        return channel, nonce

    def heartbeat(self) -> None:
        """Tell the remote watchdog Pegasus is still there."""
        channel = self.channel
        if channel is not None:
            with _link_errors(ConnectionLost):
                self.client.eagain_write(channel.write, b"\n")

    def cancel(self) -> None:
        """Close the job's stdin: the remote watchdog terminates its group."""
        self.cancelled = True  # seen by run() if the command is being sent
        channel = self.channel
        if channel is not None:
            with _link_errors(ConnectionLost):
                self.client.eagain(channel.send_eof)

    def kill(self) -> None:
        """Nothing to do: the remote watchdog sends KILL itself."""

    def close(self) -> None:
        try:
            self.client._disconnect()
        except Exception:  # noqa: BLE001 - closing a dead connection
            pass


@contextmanager
def _link_errors(kind):
    """libssh2 and socket errors mean the connection is gone: raise `kind`."""
    try:
        yield
    except (OSError, gevent.Timeout) as err:
        raise kind(_words(err)) from None
    except Exception as err:  # noqa: BLE001 - only ssh2/pssh errors are turned
        if err.__class__.__module__.startswith(("ssh2", "pssh")):
            raise kind(f"{err.__class__.__name__} {_words(err)}") from None
        raise


def _read_channel(client, channel, emit: Emit) -> None:
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
            client.poll()
        elif progressed:
            gevent.sleep(0)

