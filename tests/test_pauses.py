"""A pause on the user's side is not a death (issue 10, item 2), on real sshd nodes.

Pegasus stopped (Ctrl-z, a laptop lid) or its stdout stalled (``| less``, a
slow ``tee``) for longer than the old 4 s: remote jobs run on to their end
and are reported as they ended. Silence past ``--orphan-timeout`` stops them
on the node, and they are reported as such and go to interrupted.yaml. Each
job writes a file in the cluster's scratch folder when it ends; the tests
poll for it.
"""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from helpers import Pegasus, jobs_of, read, setup, wait_for

pytestmark = pytest.mark.slow  # each waits out a pause of seconds (sshd: the cluster fixture)


def scratch_file(cluster):
    return os.path.join(cluster.scratch, "pause-" + uuid.uuid4().hex)


def test_pegasus_stopped_for_6_s_costs_no_remote_job(cluster, tmp_path):
    done = scratch_file(cluster)
    setup(tmp_path, "- node-1\n", ["echo started; sleep 6; echo finished; touch %s" % done])
    peg = Pegasus(tmp_path, ["q", "--ssh-config", cluster.ssh_config])
    try:
        wait_for(peg.saw("[node-1] started"), what="the job to start")
        os.kill(peg.proc.pid, signal.SIGSTOP)  # Ctrl-z, a closed laptop lid
        try:
            wait_for(lambda: os.path.exists(done), timeout=30,
                     what="the job to end on the node while Pegasus is stopped")
        finally:
            os.kill(peg.proc.pid, signal.SIGCONT)
        assert peg.wait() == 0, peg.said()
    finally:
        peg.stop()
    assert [j["done"] for j in jobs_of(peg.out())] == ["exit 0"]
    assert "[node-1] finished" in peg.out()


def test_a_stalled_reader_costs_no_remote_job(cluster, tmp_path):
    """The reader stops reading (a SIGSTOPped ``cat``) while a job floods output and
    another one runs past 6 s: both end as they would have."""
    done = scratch_file(cluster)
    hosts = "- hostname: node-1\n  slot: [a, b]\n"
    setup(tmp_path, hosts, ["head -c 2000000 /dev/zero | tr '\\0' y | fold -w 100",
                            "sleep 6; echo slept; touch %s" % done])
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    os.kill(reader.pid, signal.SIGSTOP)  # nothing is read: Pegasus's stdout fills up
    peg = subprocess.Popen([sys.executable, "-m", "pegasus", "q", "--ssh-config",
                            cluster.ssh_config], cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                           stdout=reader.stdin, stderr=subprocess.PIPE)
    reader.stdin.close()
    try:
        wait_for(lambda: os.path.exists(done), timeout=30,
                 what="the sleeping job to end on the node while stdout is stalled")
    finally:
        os.kill(reader.pid, signal.SIGCONT)
    out = reader.stdout.read().decode()
    assert peg.wait(timeout=60) == 0, peg.stderr.read().decode()
    assert reader.wait(timeout=10) == 0
    assert out.count("] " + "y" * 100 + "\n") == 20000
    assert [j["done"] for j in jobs_of(out)] == ["exit 0", "exit 0"]


NOT_RESPONDING = 3  # seconds, for the next test (30 by default)


def test_a_reader_paused_past_not_responding_is_no_hung_host(cluster, tmp_path):
    """The reader pauses for three times the silence after which a host is "not
    responding" while the host's only job floods output: Pegasus stops reading the
    host's connection (back-pressure), so the kernel stops receiving from it too and
    the host seems silent. It is not taken for a hung host: the job ends as it would."""
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n  ServerAliveInterval 1\n\n" + open(cluster.ssh_config).read())
    setup(tmp_path, "- node-1\n", ["head -c 30000000 /dev/zero | tr '\\0' y | fold -w 100; "
                                  "echo; echo flood-done"])
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    os.kill(reader.pid, signal.SIGSTOP)  # `pegasus q | (sleep 9; cat)`
    peg = subprocess.Popen(
        [sys.executable, "-c", "from pegasus import cli, executor; executor.NOT_RESPONDING = "
         "%d; cli.run()" % NOT_RESPONDING, "q", "--ssh-config", str(config)],
        cwd=str(tmp_path), stdin=subprocess.DEVNULL, stdout=reader.stdin, stderr=subprocess.PIPE)
    reader.stdin.close()
    paused = time.monotonic()
    try:
        wait_for(lambda: time.monotonic() - paused >= 3 * NOT_RESPONDING, interval=0.5,
                 what="a pause of the reader (the scenario itself)")
    finally:
        os.kill(reader.pid, signal.SIGCONT)
    out = reader.stdout.read().decode()
    said = "".join(line for line in out.splitlines(True) if "y" * 100 not in line)
    assert peg.wait(timeout=60) == 0, said + peg.stderr.read().decode()
    assert reader.wait(timeout=10) == 0
    assert "not responding" not in said
    assert out.count("] " + "y" * 100 + "\n") == 300000
    assert [j["done"] for j in jobs_of(out)] == ["exit 0"]


def test_silence_past_the_orphan_timeout_is_reported_as_such(cluster, tmp_path):
    """Pegasus stopped for longer than --orphan-timeout: the node stops the job; once
    Pegasus runs again it says why, and the job goes to interrupted.yaml."""
    started = scratch_file(cluster)
    job = "touch %s; echo started; sleep 300" % started
    setup(tmp_path, "- node-1\n", [job])
    peg = Pegasus(tmp_path, ["q", "--ssh-config", cluster.ssh_config, "--orphan-timeout", "10"])
    try:
        wait_for(lambda: os.path.exists(started), what="the job to start")
        os.kill(peg.proc.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: not _running(cluster, started), timeout=30,
                     what="the node to stop the orphaned job")
        finally:
            os.kill(peg.proc.pid, signal.SIGCONT)
        assert peg.wait() == 1, peg.said()
    finally:
        peg.stop()
    done = [j["done"] for j in jobs_of(peg.out())]
    assert done == ["stopped on the node after 10 s without contact from Pegasus; "
                    "outcome unknown"], peg.said()
    assert yaml.safe_load(read(tmp_path / "interrupted.yaml")) == [{"command": job}]
    assert "connection lost" not in peg.said()  # the connection is fine


def _running(cluster, marker):
    """Whether a process with ``marker`` in its command line runs (nodes are local)."""
    res = subprocess.run(["pgrep", "-f", "[t]ouch %s" % marker], capture_output=True)
    return res.returncode == 0


# ---------------------------------------------------------------- a host that hangs (item 3)

def test_a_hung_host_is_said_within_45_s_and_the_others_finish(cluster, tmp_path):
    """node-2's sshd's are SIGSTOPped mid-job: the kernel still acknowledges TCP, so
    only keepalives that want a reply notice. The job there is reported lost; the
    rest of the queue runs on node-1; Pegasus ends."""
    started = scratch_file(cluster)
    hung_job = "touch %s; echo started; sleep 300" % started
    setup(tmp_path, "- node-1\n- node-2\n",
          ["sleep 0.5; echo one", hung_job] + ["echo more %d" % i for i in range(3)])
    peg = Pegasus(tmp_path, ["q", "--ssh-config", cluster.ssh_config])
    index = cluster.host_index("node-2")
    try:
        wait_for(lambda: os.path.exists(started), what="the job on node-2 to start")
        cluster.freeze_host(index)
        try:
            wait_for(peg.saw("host node-2: not responding"), timeout=45,
                     what="Pegasus to say node-2 is not responding")
            assert peg.wait(timeout=60) == 1, peg.said()
        finally:
            cluster.thaw_host(index)
    finally:
        peg.stop()
    out = peg.out()
    assert "its 1 running job is reported lost" in out
    assert yaml.safe_load(read(tmp_path / "interrupted.yaml")) == [{"command": hung_job}]
    assert all("[node-1] more %d" % i in out for i in range(3)), out


def _sigterm(peg):
    peg.proc.send_signal(signal.SIGTERM)
    return 143


def _ctrl_c_twice(peg):
    peg.ctrl_c()
    wait_for(peg.saw("Ctrl-c again stops them"), what="the first Ctrl-c's answer")
    peg.ctrl_c()
    return 130


@pytest.mark.parametrize("stop", [_sigterm, _ctrl_c_twice], ids=["sigterm", "ctrl-c-twice"])
def test_a_stop_ends_pegasus_within_seconds_whatever_a_hung_host_does(cluster, tmp_path,
                                                                       stop):
    started = scratch_file(cluster)
    job = "touch %s; echo started; sleep 300" % started
    setup(tmp_path, "- node-2\n", [job])
    peg = Pegasus(tmp_path, ["q", "--ssh-config", cluster.ssh_config])
    index = cluster.host_index("node-2")
    try:
        wait_for(lambda: os.path.exists(started), what="the job to start")
        cluster.freeze_host(index)
        try:
            status = stop(peg)
            assert peg.wait(timeout=20) == status, peg.said()
        finally:
            cluster.thaw_host(index)
    finally:
        peg.stop()
    assert yaml.safe_load(read(tmp_path / "interrupted.yaml")) == [{"command": job}]


# ---------------------------------------------------------------- start at once (item 4)

def test_a_host_that_accepts_tcp_and_never_answers_delays_no_one(cluster, tmp_path):
    """A listener that never speaks SSH: jobs start on node-1 without waiting for
    the silent host's 20 s connect timeout, and the run ends without it."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.9", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    config = tmp_path / "ssh_config"
    config.write_text(open(cluster.ssh_config).read() +
                      "\nHost silent\n  HostName 127.0.0.9\n  Port %d\n  ConnectTimeout 20\n"
                      % port)
    setup(tmp_path, "- node-1\n- silent\n", ["echo one", "echo two", "echo three"])
    try:
        res = subprocess.run([sys.executable, "-m", "pegasus", "q", "--ssh-config",
                              str(config)], cwd=str(tmp_path), capture_output=True,
                             text=True, timeout=120)
    finally:
        listener.close()
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert "pegasus: connecting: silent (2 s)..." in out
    assert "3 jobs, all succeeded" in out
    assert "no answer" not in out  # it ended before the silent host's timeout


def test_a_quiet_job_survives_a_long_pause_and_a_long_server_alive_interval(cluster, tmp_path):
    """A job that prints nothing for 45 s, a ServerAliveInterval of 60 s (BatchMode alone
    makes it 300 s on Debian), and Pegasus stopped for 35 s in the middle: the host
    is not 'not responding' (it had no keepalive to answer), the job ends as it would."""
    done = scratch_file(cluster)
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n  ServerAliveInterval 60\n\n" + open(cluster.ssh_config).read())
    setup(tmp_path, "- node-1\n", ["echo started; sleep 45; touch %s; echo finished" % done])
    peg = Pegasus(tmp_path, ["q", "--ssh-config", str(config)])
    try:
        wait_for(peg.saw("[node-1] started"), what="the job to start")
        os.kill(peg.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            wait_for(lambda: time.monotonic() - stopped >= 35, timeout=60, interval=0.5,
                     what="a 35 s pause (the scenario itself)")
        finally:
            os.kill(peg.proc.pid, signal.SIGCONT)
        assert peg.wait(timeout=120) == 0, peg.said()
    finally:
        peg.stop()
    assert os.path.exists(done)
    assert "not responding" not in peg.said()
    assert [j["done"] for j in jobs_of(peg.out())] == ["exit 0"]
