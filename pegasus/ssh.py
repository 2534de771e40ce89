"""``SshExecutor``: jobs as channels of one SSH connection, under the remote wrapper.

``connect`` opens and authenticates a connection (sshclient.py), retrying
handshakes that sshd's MaxStartups drops, and asks once which login shell the
user has. Each job then runs under the wrapper (wrapper.sh): the executor
writes the command to the channel's stdin, a line every ``HEARTBEAT`` s while
it runs, and cancels it by closing stdin; the wrapper's watchdog then stops
the job's process group. The wrapper exits with the job's status, 128+N when
signal N killed it (parallel-ssh alone reports 0).
"""

from __future__ import annotations

import os
import random
import shlex
import socket
import time
from typing import Callable, Optional, Tuple

import gevent

from pegasus import faults
from pegasus.errors import HostAuthError, HostError, HostKeyError
from pegasus.executor import (ASIDE_OUTPUT, ORPHAN_TIMEOUT, ORPHANED, ConnectionLost, Emit,
                              NotStarted, Orphaned, Placed, nothing)
from pegasus.sshclient import AuthenticationError, Client, link_errors, open_client, words
from pegasus.sshconfig import SshTarget
from pegasus.wrapper import POSIX_LOGIN_SHELLS, command_input, new_nonce, shell_command

CONNECT_TRIES = 6  # sshd's MaxStartups drops some handshakes under load
CONNECT_TIMEOUT = 30  # seconds for one attempt, without ssh_config's ConnectTimeout


def connect(target: SshTarget, silence: int = ORPHAN_TIMEOUT) -> "SshExecutor":
    """Open and authenticate one connection, retrying refused handshakes."""
    timeout = target.connect_timeout or CONNECT_TIMEOUT
    delay = 0.1
    for attempt in range(1, CONNECT_TRIES + 1):
        timer = gevent.Timeout(timeout)  # a BaseException: no library code catches it
        timer.start()
        try:
            return _executor(open_client(target), silence)
        except HostKeyError:
            raise
        except AuthenticationError as err:
            raise HostAuthError(target.alias, f"authentication refused for user "
                                f"'{target.user}': {words(err)}") from None
        except (Exception, gevent.Timeout) as err:  # noqa: BLE001 - turned into words below
            if isinstance(err, gevent.Timeout) and err is not timer:
                raise
            why, final = _why(err, timeout)
            if final or attempt == CONNECT_TRIES or isinstance(err, HostError):
                raise HostError(target.alias, f"cannot connect to {target.hostname}:"
                                f"{target.port}: {why}") from None
        finally:
            timer.close()
        gevent.sleep(delay * (1 + random.random()))
        delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def _executor(client: Client, silence: int) -> "SshExecutor":
    """The executor of a client just made; the client closed if that fails."""
    try:
        return SshExecutor(client, _posix_login_shell(client), silence)
    except BaseException:
        client.close_connection()
        raise


def _why(err: Exception, timeout: float):
    """(the error in a user's words, whether trying again at once is pointless).

    A handshake dropped under load (sshd's MaxStartups) is worth another
    try; a refused port or an unknown name is not.
    """
    if isinstance(err, gevent.Timeout):  # ConnectTimeout: retried later, in the background
        return f"no answer (timed out after {timeout:g} s)", True
    text = words(err)
    if isinstance(err, ConnectionRefusedError) or "Connection refused" in text:
        return "connection refused", True
    if "No route to host" in text or "Network is unreachable" in text:
        return "no route to host (is it on the network?)", True
    if isinstance(err, socket.gaierror) or "Name or service not known" in text \
            or "Unknown host" in text:
        return "host name not found", True
    if "Timeout" in type(err).__name__ or "timed out" in text.lower():
        return f"no answer (timed out after {timeout:g} s)", True
    if type(err).__name__ in _CLOSED_EARLY:
        return "the connection was closed before the SSH handshake ended", False
    return text, False


_CLOSED_EARLY = ("SocketDisconnectError", "SocketRecvError", "BannerRecvError",
                 "SessionHandshakeError")  # libssh2's kinds: sshd dropped the handshake


def _posix_login_shell(client: Client) -> bool:
    """Whether the user's login shell can run the wrapper itself (one probe a connection)."""
    out = bytearray()

    def keep(name: str, data: bytes) -> None:
        if name == "stdout" and len(out) < 4096:
            out.extend(data)

    channel = client.channel()
    client.run_exec(channel, 'echo "$SHELL"')
    client.read(channel, keep)
    return _says_posix_login_shell(client.exit_status(channel), bytes(out))


def _says_posix_login_shell(status: int, output: bytes) -> bool:
    """The probe's answer: one word, a shell of the sh family (else: exec sh)."""
    said = output.split()
    return status == 0 and len(said) == 1 and \
        os.path.basename(said[0]).decode("ascii", "replace") in POSIX_LOGIN_SHELLS


class SshExecutor:
    """Runs jobs as channels of one open SSH connection (one job at a time).

    The next job's wrapper is always started already (``waiting``): its
    channel is asked for while a job runs and its exec is sent when the job
    ends, so sshd and the login shell start while the loop takes the next
    entry; ``run`` then only sends the command.
    """

    def __init__(self, client: Client, posix_login_shell: bool = False,
                 silence: int = ORPHAN_TIMEOUT):
        self.client = client
        self.posix_login_shell = posix_login_shell
        self.silence = silence  # the remote watchdog's orphan timeout
        self.beat_every = max(1.0, min(30.0, silence / 10))  # each line forks a timer there
        self.last_beat = 0.0
        self.channel = None  # the running job's, once its command is sent
        self.cancelled = False
        self.waiting = None  # (channel, nonce, exec string or None once started)
        self._start_wrapper()

    def run(self, command: str, emit: Emit, launching: Callable[[], None] = nothing,
            placed: Optional[Placed] = None) -> int:
        client = self.client
        self.cancelled = False
        with link_errors(NotStarted, client):
            channel, nonce = self._started_wrapper()
        launching()
        with link_errors(ConnectionLost, client):
            try:
                client.write(channel, command_input(command, nonce))
                faults.point("exec-sent")
                self.channel = channel
                if self.cancelled:
                    client.send_eof(channel)
                asked = self._ask_for_channel()  # sshd answers while the job runs
                client.read(channel, emit)
                status = client.exit_status(channel)
            finally:
                self.channel = None
        self._start_wrapper(asked)
        if status == ORPHANED:
            raise Orphaned(f"stopped on the node after {self.silence} s without contact "
                           "from Pegasus; outcome unknown")
        return status

    def _ask_for_channel(self):
        """Send a channel-open request without waiting: a channel, or None."""
        try:
            return self.client.ask_for_channel()
        except Exception:  # noqa: BLE001 - _start_wrapper opens one itself
            return None

    def _start_wrapper(self, asked=None) -> None:
        """Open the next job's channel (or finish opening the one asked for) and
        send its exec now: sshd starts the wrapper while the loop updates the
        queue file and the journal."""
        self.waiting = None
        try:
            # client.channel() also finishes the open that ask_for_channel left pending
            channel = asked if asked is not None else self.client.channel()
            nonce = new_nonce()
            exec_string = shell_command(nonce, self.posix_login_shell, self.silence)
            if self.client.send_exec(channel, exec_string):
                exec_string = None  # already confirmed
            self.waiting = (channel, nonce, exec_string)
        except Exception:  # noqa: BLE001 - the next job tries again and says why
            self.waiting = None

    def _started_wrapper(self):
        """The waiting wrapper's channel and nonce."""
        waiting, self.waiting = self.waiting, None
        if waiting is None:  # starting it failed: once more, to say why
            channel, nonce = self.client.channel(), new_nonce()
            self.client.run_exec(channel, shell_command(nonce, self.posix_login_shell,
                                                        self.silence))
            return channel, nonce
        channel, nonce, pending = waiting
        if pending is not None:
            self.client.run_exec(channel, pending)  # wait for sshd's reply
        return channel, nonce

    def heartbeat(self) -> None:
        """Tell the remote watchdog Pegasus is still there (every ``beat_every`` s)."""
        channel, now = self.channel, time.monotonic()
        if channel is not None and now - self.last_beat >= self.beat_every:
            self.last_beat = now
            with link_errors(ConnectionLost, self.client):
                self.client.write(channel, b"\n")

    def cancel(self) -> None:
        """Close the job's stdin: the remote watchdog terminates its group."""
        self.cancelled = True  # seen by run() if the command is being sent
        channel = self.channel
        if channel is not None:
            with link_errors(ConnectionLost, self.client):
                self.client.send_eof(channel)

    def kill(self) -> None:
        """Nothing to do: the remote watchdog sends KILL itself."""

    def run_aside(self, command: str) -> Tuple[int, bytes]:
        """A short command on a channel of its own, beside the job (a cancel hook),
        run by ``sh`` as the job is; its exit status and its output's start."""
        out = bytearray()

        def keep(_stream: str, data: bytes) -> None:
            out.extend(data[:max(ASIDE_OUTPUT - len(out), 0)])
        with link_errors(ConnectionLost, self.client):
            channel = self.client.channel()
            self.client.run_exec(channel, "exec sh -c " + shlex.quote(command))
            self.client.read(channel, keep)
            return self.client.exit_status(channel), bytes(out)

    def silent_for(self) -> Optional[float]:
        """Seconds since the host last sent anything (keepalives ask it to reply)."""
        return self.client.silent_for()

    def close(self) -> None:
        self.client.close_connection()
