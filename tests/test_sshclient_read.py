"""Reading a job's output: never wait on a socket libssh2 has already drained.

A read of one stream makes libssh2 drain the socket into the session's
buffer, the other stream's data and the channel's end included; waiting on the
socket then waits until the poll's 1 s timer (a job 1.0 s late, in about one
200-job run in two). The channel here is a stand-in that behaves as libssh2
does; the real thing is covered by every sshd test, and ``consumed`` (the
kernel's count) by the test below against a real sshd.
"""
import socket

import gevent
import pytest
from ssh2.error_codes import LIBSSH2_ERROR_EAGAIN

from pegasus import sockwait, sshclient, sshconfig


class DrainingChannel:
    """What sshd sent (``wire``) reaches the socket after the first read (or
    ``arrives_after`` reads); every later read drains it all into libssh2's
    buffers."""

    def __init__(self, wire, arrives_after=1):
        self.wire, self.reads, self.arrives_after = list(wire), 0, arrives_after
        self.buffered = {"stdout": bytearray(), "stderr": bytearray()}
        self.remote_eof = False
        self.consumed = 0  # bytes drained from the socket

    def _drain(self):
        if self.reads > self.arrives_after:
            self.consumed += sum(len(data) + 32 for _, data in self.wire)
            for stream, data in self.wire:
                if stream == "eof":
                    self.remote_eof = True
                else:
                    self.buffered[stream] += data
            self.wire.clear()

    def _read(self, stream, size):
        self.reads += 1
        self._drain()
        buf = self.buffered[stream]
        if buf:
            data = bytes(buf[:size])
            del buf[:size]
            return len(data), data
        return (0, b"") if self.remote_eof else (LIBSSH2_ERROR_EAGAIN, b"")

    def read(self, size):
        return self._read("stdout", size)

    def read_stderr(self, size):
        return self._read("stderr", size)

    def eof(self):
        return self.remote_eof and not any(self.buffered.values())


@pytest.mark.parametrize("wire, output", [
    ([("stdout", b"hello\n"), ("eof", b"")], [("stdout", b"hello\n")]),
    ([("eof", b"")], []),  # a silent job: only its end is drained
    ([("stderr", b"oops\n"), ("stdout", b"out\n"), ("eof", b"")],
     [("stderr", b"oops\n"), ("stdout", b"out\n")]),
], ids=["stdout", "silent", "both"])
def test_a_job_s_output_is_read_without_waiting_on_a_drained_socket(wire, output, monkeypatch):
    channel = DrainingChannel(wire)
    client = bare_client()
    waits_in_vain = []

    def poll():  # the socket is drained: a real poll would sleep until its 1 s timer
        waits_in_vain.append(dict(channel.buffered, eof=channel.remote_eof))
        channel._drain()
    client.poll = poll
    monkeypatch.setattr(sockwait, "consumed", lambda sock: channel.consumed)
    got = []
    client.read(channel, lambda stream, data: got.append((stream, data)))
    assert got == output
    assert waits_in_vain == []


def bare_client(sock=None):
    client = object.__new__(sshclient.Client)
    client.sock, client.waits = sock, sockwait.Socket()
    return client


def test_a_reader_waiting_on_the_socket_wakes_when_a_heartbeat_drained_its_data(monkeypatch):
    """A heartbeat's write (another greenlet) drains the socket too: the job's
    reader, already waiting on it, must look at libssh2's buffer again."""
    ours, theirs = socket.socketpair()
    channel = DrainingChannel([("stdout", b"done\n"), ("eof", b"")], arrives_after=1000)
    client = bare_client(ours)

    class Session:
        def block_directions(self):
            return 1  # inbound: libssh2 waits for the socket to be readable
    client.session = Session()
    monkeypatch.setattr(sockwait, "consumed", lambda sock: channel.consumed)
    got = []
    reader = gevent.spawn(client.read, channel, lambda stream, data: got.append((stream, data)))
    turns(5)
    assert not reader.ready() and len(client.waits.waiting) == 1  # waiting on the socket

    def heartbeat_write(data):  # libssh2's write drains the socket first
        channel.arrives_after = 0
        channel._drain()
        return 0, len(data)
    client.write(type("C", (), {"write": staticmethod(heartbeat_write)})(), b"\n")
    turns(5)  # no timer fires in a few turns of the loop: only a wake-up can end the read
    try:
        assert reader.ready() and reader.value is None
        assert got == [("stdout", b"done\n")]
    finally:
        reader.kill()
        ours.close()
        theirs.close()


def turns(n):
    for _ in range(n):
        gevent.sleep(0)


def test_consumed_counts_what_libssh2_read_from_a_real_connection(cluster):
    client = sshclient.open_client(sshconfig.resolve("node-1", cluster.ssh_config))
    try:
        before = sockwait.consumed(client.sock)
        channel = client.channel()
        client.run_exec(channel, "head -c 100000 /dev/zero")
        got = bytearray()
        client.read(channel, lambda stream, data: got.extend(data))
        assert client.exit_status(channel) == 0
        assert len(got) == 100000
        assert sockwait.consumed(client.sock) - before > 100000  # the output and the SSH framing
    finally:
        client.close_connection()
