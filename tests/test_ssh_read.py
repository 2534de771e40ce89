"""Reading a job's output never waits on the socket for packets libssh2 already holds.

Reading one stream also takes in the packets of the other and the channel's
EOF; a wait on the socket after that was woken by nothing and lasted its full
second: a job of a few ms took 1 s now and then (the run-to-run variance of
issue 16: 200 short jobs in 1.6 s or in 2.6 s).
"""
import select
import time

import gevent
import pytest

from pegasus import sockwait, ssh, sshclient, sshconfig

pytestmark = pytest.mark.sshd


class SecondReadLate:
    """The real channel, whose second read (of either stream) comes only once
    the job's output and EOF are in, and takes them in: the order a race gives
    now and then."""

    def __init__(self, channel):
        self.channel, self.calls = channel, 0

    def __getattr__(self, name):
        return getattr(self.channel, name)

    def read(self, size):
        return self._read(self.channel.read, size)

    def read_stderr(self, size):
        return self._read(self.channel.read_stderr, size)

    def _read(self, real, size):
        self.calls += 1
        if self.calls == 2:
            deadline = time.monotonic() + 30
            while self.channel.wait_eof() != 0 and time.monotonic() < deadline:
                gevent.sleep(0.01)  # each wait_eof takes in the packets that came
        return real(size)


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_output_already_taken_in_is_read_without_waiting_on_the_socket(cluster, stream):
    executor = ssh.connect(sshconfig.resolve(cluster.aliases[0], cluster.ssh_config))
    client = executor.client
    waits = []
    try:
        channel = client.channel()
        client.run_exec(channel, "sleep 0.5; echo %s%s" % (
            stream, " >&2" if stream == "stderr" else ""))
        got = []
        wrapped = SecondReadLate(channel)
        real_poll = client.poll
        client.poll = lambda: (waits.append(1), real_poll())  # counts the reading's waits
        client.read(wrapped, lambda name, data: got.append((name, data)))
        client.poll = real_poll
        status = client.exit_status(channel)
    finally:
        executor.close()
    assert got == [(stream, stream.encode() + b"\n")] and status == 0
    assert wrapped.calls >= 2
    assert waits == [], "waited on the socket for packets libssh2 already held"


def test_output_a_heartbeat_took_in_is_read_at_once(cluster, monkeypatch):
    """A heartbeat (another greenlet's write on the job's channel) first reads
    what came on the socket: the job's output, which a wait on the socket then
    never sees. Waits are made endless here and keepalives are off, so only a
    wake-up ends them."""
    monkeypatch.setattr(sockwait, "TIMER", 3600.0)
    monkeypatch.setattr(sshclient, "keepalive_every", lambda target: 0)
    executor = ssh.connect(sshconfig.resolve(cluster.aliases[0], cluster.ssh_config))
    client = executor.client
    got = []
    try:
        channel = client.channel()
        client.run_exec(channel, "sleep 0.5; echo out; cat >/dev/null")
        reader = gevent.spawn(client.read, channel, lambda name, data: got.append(data))
        with gevent.Timeout(20, AssertionError("the reader never waited on the socket")):
            while not client.waits.waiting:
                gevent.sleep(0.01)
        # Block the whole process (the hub too) until the output is on the socket,
        # then write a heartbeat before the reader's wait can see it.
        readable, _, _ = select.select([client.sock.fileno()], [], [], 20)
        assert readable, "the job's output never came"
        client.write(channel, b"\n")
        with gevent.Timeout(20, AssertionError("output taken in by a heartbeat was never read")):
            while not got:
                gevent.sleep(0.01)
        client.send_eof(channel)  # cat ends, and the job
        reader.get(timeout=20)
        status = client.exit_status(channel)
    finally:
        executor.close()
    assert got == [b"out\n"] and status == 0
