"""The executor interface (pegasus.executor.Executor) and its two implementations."""
import inspect
import subprocess
import sys

import pytest

from pegasus import local, ssh
from pegasus.executor import Executor

IMPLEMENTATIONS = [local.LocalExecutor, ssh.SshExecutor]
METHODS = ["run", "heartbeat", "cancel", "kill", "close"]


@pytest.mark.parametrize("cls", IMPLEMENTATIONS, ids=lambda c: c.__name__)
def test_both_executors_implement_the_protocol(cls):
    assert issubclass(cls, Executor)
    for name in METHODS:
        wanted = inspect.signature(getattr(Executor, name))
        got = inspect.signature(getattr(cls, name))
        assert list(got.parameters) == list(wanted.parameters), name
        assert [p.default for p in got.parameters.values()] == \
            [p.default for p in wanted.parameters.values()], name


def test_a_local_executor_is_an_executor():
    assert isinstance(local.LocalExecutor(), Executor)


@pytest.mark.parametrize("module", ["pegasus.ssh", "pegasus.local", "pegasus.sshclient",
                                    "pegasus.wrapper", "pegasus.executor"])
def test_each_module_imports_first(module):
    """No import cycle: any of them can be the first one imported."""
    subprocess.run([sys.executable, "-c", "import " + module], check=True, timeout=60)


@pytest.mark.parametrize("error, words, final", [
    (ConnectionRefusedError(111, "Connection refused"), "connection refused", True),
    (Exception("Error connecting to host '169.254.1.2:22' - No route to host"),
     "no route to host (is it on the network?)", True),
    (Exception("Unknown host x.invalid - Name or service not known"), "host name not found",
     True),
    (type("SocketDisconnectError", (Exception,), {})(), "the connection was closed before "
     "the SSH handshake ended", False),  # sshd's MaxStartups drops some: try again
])
def test_connection_errors_in_words(error, words, final):
    assert ssh._why(error, 30) == (words, final)
