"""connecting.Connector: ssh_config resolution and connections, without sshd."""
import threading
import time

import gevent
import pytest

from pegasus import connecting, ssh, sshconfig
from pegasus.errors import HostConfigError
from pegasus.model import SubNode


class Opened:
    def __init__(self, name):
        self.name, self.closed = name, False

    def close(self):
        self.closed = True


@pytest.fixture
def world(monkeypatch):
    """ssh -G and ssh.connect replaced: ``slow-host``'s ssh -G waits for ``release``."""
    w = type("World", (), {})()
    w.release, w.events, w.opened = threading.Event(), [], []

    def resolve(name, config=None):
        if name == "slow-host":
            w.release.wait(10)
        if name == "bad-host":
            raise HostConfigError(name, "ssh cannot resolve it from ssh_config: no")
        w.events.append("resolved " + name)
        return name

    def connect(target, silence):
        w.events.append("connected " + target)
        w.opened.append(Opened(target))
        return w.opened[-1]
    monkeypatch.setattr(sshconfig, "resolve", resolve)
    monkeypatch.setattr(ssh, "connect", connect)
    return w


def until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        gevent.sleep(0.01)
    return condition()


def test_a_host_connects_while_others_still_resolve(world):
    """64 hosts' ``ssh -G`` took 0.6 s before the first key exchange began."""
    nodes = [SubNode(0, "fast-host"), SubNode(1, "slow-host")]
    connector = connecting.Connector(nodes, None)
    run = gevent.spawn(connector.connect_all, nodes)
    try:
        assert until(lambda: "connected fast-host" in world.events)
        assert "resolved slow-host" not in world.events
    finally:
        world.release.set()
    executors, failed, pending = run.get(timeout=30)
    assert sorted(e.name for e in executors.values()) == ["fast-host", "slow-host"]
    assert failed == [] and pending == {}


def test_a_host_ssh_config_cannot_resolve_stops_it_all_and_closes_the_others(world):
    world.release.set()
    nodes = [SubNode(0, "fast-host"), SubNode(1, "bad-host"), SubNode(2, "slow-host")]
    connector = connecting.Connector(nodes, None)
    with pytest.raises(HostConfigError, match="bad-host"):
        connector.connect_all(nodes)
    assert all(opened.closed for opened in world.opened)


def test_a_connection_attempt_that_crashes_is_a_host_error_not_an_executor(world, monkeypatch):
    """A bug while connecting one host (here: ssh.connect raising a RuntimeError)
    is that host's error in words; the others connect. It was taken for an
    executor of None, and the run crashed at its end closing it."""
    world.release.set()
    good = ssh.connect

    def connect(target, silence):
        if target == "buggy-host":
            raise RuntimeError("boom")
        return good(target, silence)
    monkeypatch.setattr(ssh, "connect", connect)
    nodes = [SubNode(0, "fast-host"), SubNode(1, "buggy-host")]
    executors, failed, pending = connecting.Connector(nodes, None).connect_all(nodes)
    assert [e.name for e in executors.values()] == ["fast-host"]
    assert [str(err) for err in failed] == [
        "host buggy-host: internal error while connecting: RuntimeError('boom')"]
    assert pending == {}
