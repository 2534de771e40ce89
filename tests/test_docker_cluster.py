"""The docker tier: Pegasus against the compose cluster of docker/compose.yaml.

Not the loopback sshd fixture: four containers node-1 .. node-4 (OpenSSH on
127.0.0.1:2221 .. 2224, the nodes of docker/cluster/ssh_config) and the jump
host ``jump`` (python3 and the OpenSSH client only).  Marked ``docker``: the
normal run deselects these tests (conftest.py); ``docker/ci.sh`` brings the
cluster up, runs ``pytest -m docker`` on this file and takes the cluster down.
They stop and start node containers, so they run one at a time (no xdist).

Run by ci.sh (PEGASUS_DOCKER_TESTS=1), a cluster that is not there fails the
tests; elsewhere they are skipped with the reason.
"""
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from helpers import Running, jobs_of, queue_entries, read, setup, wait_for

ROOT = Path(__file__).resolve().parent.parent
DOCKER_DIR = ROOT / "docker"
PROJECT = dict(line.split("=", 1) for line in (DOCKER_DIR / ".env").read_text().split())[
    "COMPOSE_PROJECT_NAME"]
NODES = ["node-1", "node-2", "node-3", "node-4"]
HOSTS = "".join("- %s\n" % n for n in NODES)
BY_SCRIPT = os.environ.get("PEGASUS_DOCKER_TESTS") == "1"

pytestmark = pytest.mark.docker


def docker(*args, timeout=120):
    return subprocess.run(["docker", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def container(service):
    """The id of the compose project's container of ``service`` (either compose)."""
    res = docker("ps", "-aq", "--filter", "label=com.docker.compose.project=%s" % PROJECT,
                 "--filter", "label=com.docker.compose.service=%s" % service)
    ids = res.stdout.split()
    assert res.returncode == 0 and len(ids) == 1, (service, res.stdout + res.stderr)
    return ids[0]


def in_container(service, command, timeout=60):
    """``docker exec`` of ``sh -c command`` in the service's container."""
    return docker("exec", container(service), "sh", "-c", command, timeout=timeout)


def _unavailable():
    """Why the compose cluster cannot be used, or None."""
    if shutil.which("docker") is None:
        return "no docker command"
    if docker("info", timeout=30).returncode != 0:
        return "no Docker engine answers (docker info)"
    res = docker("ps", "-q", "--filter", "label=com.docker.compose.project=%s" % PROJECT)
    if len(res.stdout.split()) != len(NODES) + 1:
        return "the compose project %s is not up (%d of %d containers run)" % (
            PROJECT, len(res.stdout.split()), len(NODES) + 1)
    if not (DOCKER_DIR / "cluster" / "ssh_config").is_file():
        return "docker/cluster/ssh_config is missing (docker/setup.sh makes it)"
    return None


@pytest.fixture(scope="session")
def ssh_config():
    """docker/cluster/ssh_config, once the cluster is known to be up."""
    reason = _unavailable()
    if reason is not None:
        reason = "docker compose cluster: %s; docker/ci.sh brings it up and runs these tests" % reason
        if BY_SCRIPT:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return str(DOCKER_DIR / "cluster" / "ssh_config")


def gate(tag):
    """A job that says it started, waits for /tmp/<tag> on its node, and says it finished."""
    return ("echo started $(hostname); while [ ! -e /tmp/%s ]; do sleep 0.1; done; "
            "echo finished $(hostname)" % tag)


def open_gate(tag, nodes=NODES):
    for node in nodes:
        res = in_container(node, "touch /tmp/%s" % tag)
        assert res.returncode == 0, res.stderr


def saw(peg, text):
    def seen():
        if text in peg.output:
            return True
        assert peg.proc.poll() is None, "Pegasus exited before printing %r:\n%s" % (text, peg.output)
        return False
    return seen


def test_queue_mode_runs_every_job_once_over_the_four_nodes(ssh_config, tmp_path, run_pegasus):
    jobs = ["echo job-%d on $(hostname)" % k for k in range(12)]
    setup(tmp_path, HOSTS, jobs)
    res = run_pegasus(["q", "--ssh-config", ssh_config], cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    ran = jobs_of(res.stdout)
    assert sorted(j["command"] for j in ran) == sorted(jobs)
    for job in ran:  # each ran in the container its label names
        assert job["lines"] == ["%s on %s" % (job["command"].split()[1], job["label"][1:-1])], job
        assert job["done"] == "exit 0"
    # (not "every node ran one": a node slow to connect under load may get none;
    # the stop test below has each node take a job)
    assert {j["label"] for j in ran} <= {"[%s]" % n for n in NODES}
    assert queue_entries(tmp_path / "queue.yaml") == []
    assert [e["command"] for e in queue_entries(tmp_path / "consumed.yaml")] == jobs


def test_broadcast_with_error_aborts_stops_after_the_failing_step(ssh_config, tmp_path,
                                                                 run_pegasus):
    queue = ["hostname", "test $(hostname) != node-3", "echo never"]
    setup(tmp_path, HOSTS, queue)
    res = run_pegasus(["b", "-e", "--ssh-config", ssh_config], cwd=tmp_path, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    steps = jobs_of(res.stdout)
    assert sorted((j["command"], j["lines"]) for j in steps if j["command"] == "hostname") \
        == [("hostname", [n]) for n in NODES]
    assert "step 2 'test $(hostname) != node-3': 1 of 4 sub-nodes failed" in res.stdout
    assert "[node-3] exit 1" in res.stdout
    assert "never" not in [j["command"] for j in steps]
    assert queue_entries(tmp_path / "queue.yaml") == ["echo never"]


def test_a_stopped_node_loses_its_job_the_others_finish_and_it_comes_back(ssh_config,
                                                                        tmp_path):
    tag = "gate-" + uuid.uuid4().hex[:8]
    setup(tmp_path, HOSTS, [gate(tag)] * 4)
    peg = Running(["q", "--daemon", "--ssh-config", ssh_config], cwd=tmp_path,
                  env={"NO_COLOR": "1"})
    node = "node-2"
    try:
        for n in NODES:
            wait_for(saw(peg, "[%s] started %s" % (n, n)), timeout=60, what=n + "'s job to start")
        res = docker("stop", "-t", "2", container(node))
        assert res.returncode == 0, res.stderr
        wait_for(saw(peg, "host %s: connection lost" % node), timeout=60,
                 what="the lost node to be reported")
        others = [n for n in NODES if n != node]
        open_gate(tag, others)
        for n in others:
            wait_for(saw(peg, "[%s] finished %s" % (n, n)), what=n + "'s job to finish")

        assert docker("start", container(node)).returncode == 0
        wait_for(saw(peg, "host %s: connected; taking jobs again" % node), timeout=90,
                 what="the node to be reconnected")
        again = "gate2-" + uuid.uuid4().hex[:8]
        (tmp_path / "queue.yaml").write_text("- %s\n" % gate(again) * 4)
        for n in NODES:  # every node is free: each takes one
            wait_for(saw(peg, "[%s] started %s" % (n, n)) if n != node else
                     lambda: peg.output.count("[%s] started %s" % (n, n)) == 2,
                     timeout=60, what=n + " to take a job")
        open_gate(again)
        wait_for(lambda: peg.output.count("] finished ") == 7, what="the second jobs to finish")
        peg.interrupt()
        status = peg.finish(timeout=60)
    finally:
        if peg.proc.poll() is None:
            peg.finish(timeout=1)
        docker("start", container(node))
    assert status == 130, peg.output
    interrupted = queue_entries(tmp_path / "interrupted.yaml")
    assert [e["command"] for e in interrupted] == [gate(tag)], read(tmp_path / "interrupted.yaml")
    assert len(queue_entries(tmp_path / "consumed.yaml")) == 8


def test_second_ctrl_c_leaves_no_job_running_on_any_node(ssh_config, tmp_path):
    marker = "pegasus-cancel-" + uuid.uuid4().hex[:8]
    jobs = ["echo started $(hostname); sleep 600; true %s-%d" % (marker, k) for k in range(4)]
    setup(tmp_path, HOSTS, jobs + ["echo never"])
    peg = Running(["q", "--ssh-config", ssh_config], cwd=tmp_path, env={"NO_COLOR": "1"})

    def running_on(node):
        """A job's shell (its command line has the marker) or its sleep runs on ``node``
        (nothing else runs sleep there: the wrapper's own timers are the job's too)."""
        return any(docker("exec", container(node), "pgrep", *how).returncode == 0
                   for how in (["-f", marker], ["-x", "sleep"]))

    try:
        for n in NODES:
            wait_for(saw(peg, "[%s] started %s" % (n, n)), timeout=60, what=n + "'s job to start")
        assert all(running_on(n) for n in NODES)
        peg.interrupt()
        wait_for(saw(peg, "Ctrl-c"), what="the first Ctrl-c to be acknowledged")
        assert all(running_on(n) for n in NODES), "the first Ctrl-c stopped a job"
        peg.interrupt()
        status = peg.finish(timeout=60)
        wait_for(lambda: not any(running_on(n) for n in NODES), timeout=30,
                 what="every node's job to be gone (docker exec NODE pgrep)")
    finally:
        if peg.proc.poll() is None:
            peg.finish(timeout=1)
        for n in NODES:
            in_container(n, "pkill -f %s; true" % marker)
    assert status == 130, peg.output
    assert queue_entries(tmp_path / "queue.yaml") == ["echo never"]


@pytest.fixture(scope="session")
def built_pyz(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "pegasus.pyz"
    res = subprocess.run([sys.executable, str(ROOT / "build_zipapp.py"), "--output", str(out)],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, "build_zipapp.py failed:\n" + res.stdout + res.stderr
    return out


JUMP_SSH_CONFIG = """\
Host node-*
    User pegasus-test
    IdentityFile /root/run/client_key
    IdentitiesOnly yes
    UserKnownHostsFile /root/run/known_hosts
    StrictHostKeyChecking accept-new
    BatchMode yes
"""


def test_pyz_runs_on_the_jump_host_against_the_nodes_by_service_name(ssh_config, built_pyz):
    jump = container("jump")
    assert docker("exec", jump, "python3", "-c", "import gevent").returncode != 0, \
        "the jump host has gevent: the .pyz would not be shown to bring its own"
    run = "/root/run-" + uuid.uuid4().hex[:8]
    files = {"pegasus.pyz": built_pyz.read_bytes(),
             "client_key": (DOCKER_DIR / "cluster" / "client_key").read_bytes(),
             "ssh_config": JUMP_SSH_CONFIG.replace("/root/run", run).encode(),
             "hosts.yaml": HOSTS.encode(),
             "queue.yaml": b"".join(b"- echo pyz-%d $(hostname)\n" % k for k in range(8))}
    try:
        assert docker("exec", jump, "mkdir", run).returncode == 0
        for name, data in files.items():
            res = subprocess.run(["docker", "exec", "-i", jump, "sh", "-c", "cat > %s/%s" % (run, name)],
                                 input=data, capture_output=True, timeout=120)
            assert res.returncode == 0, res.stderr
        assert docker("exec", jump, "chmod", "700", run + "/pegasus.pyz").returncode == 0
        assert docker("exec", jump, "chmod", "600", run + "/client_key").returncode == 0
        res = docker("exec", "-w", run, "-e", "NO_COLOR=1", jump,
                     "./pegasus.pyz", "q", "--ssh-config", "ssh_config", timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        ran = jobs_of(res.stdout)
        assert len(ran) == 8
        for job in ran:
            assert job["lines"] == ["%s %s" % (job["command"].split()[1], job["label"][1:-1])]
        assert {j["label"] for j in ran} <= {"[%s]" % n for n in NODES}
    finally:
        docker("exec", jump, "rm", "-rf", run, "/root/.shiv")
