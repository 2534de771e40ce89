"""GPUs in foreign use, end to end: the real ``pegasus q`` with a fake ``nvidia-smi``.

Each host's ``gpu_probe`` runs ``tests/fake-nvidia-smi`` (copied where the
test user can read it) with that host's state file, so no GPU is needed: the
state file says which GPUs use memory, which run compute processes, or that
the driver fails. Every test runs on the sshd cluster and on ``localhost``
(two local hosts: ``localhost`` and ``127.0.0.1``). Jobs append their host
and ``{{slots}}`` to a log; nothing waits with a fixed sleep.
"""
import os
import shutil
import tempfile
import uuid

import pytest

from helpers import Pegasus, read, wait_for, write

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake-nvidia-smi")
DRIVER = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"
WHERE = [pytest.param("cluster", marks=pytest.mark.sshd), "localhost"]


class Gpus:
    """A folder the nodes' user can read: the fake nvidia-smi, a state file per
    host, and the jobs' log."""

    def __init__(self, where, request, tmp_path):
        if where == "cluster":
            cluster = request.getfixturevalue("cluster")
            self.hosts, self.args = cluster.aliases[:2], ["--ssh-config", cluster.ssh_config]
            parent = cluster.scratch
        else:
            self.hosts, self.args, parent = ["localhost", "127.0.0.1"], [], None
        self.dir = tempfile.mkdtemp(prefix="gpus-", dir=parent)
        os.chmod(self.dir, 0o777)  # jobs of the test user write the log
        request.addfinalizer(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        self.fake = os.path.join(self.dir, "nvidia-smi")
        shutil.copyfile(FAKE, self.fake)
        os.chmod(self.fake, 0o755)
        self.log = os.path.join(self.dir, "jobs.log")
        self.folder = tmp_path

    def state(self, host, text):
        """Replace ``host``'s state file at once (as a GPU changes, not half-written)."""
        path = os.path.join(self.dir, f"state-{host}")
        partial = f"{path}.{uuid.uuid4().hex}"
        write(partial, text)
        os.chmod(partial, 0o644)
        os.replace(partial, path)

    def setup(self, hosts, jobs):
        """hosts: [(host, slots, probed)]; jobs: [(name, slots)]."""
        lines = []
        for host, slots, probed in hosts:
            lines.append(f"- hostname: {host}\n  slots: {slots}\n")
            if probed:
                lines.append(f"  gpu_probe: sh {self.fake} {self.dir}/state-{host}\n")
        write(self.folder / "hosts.yaml", "".join(lines))
        write(self.folder / "queue.yaml", "".join(
            f"- command: echo {name} {{{{hostname}}}} {{{{slots}}}} >> {self.log}\n"
            f"  slots: {slots}\n" for name, slots in jobs))

    def start(self):
        return Pegasus(self.folder, ["q", *self.args])

    def ran(self):
        """[(job, host, slots)] from the jobs' log, in the order they wrote it."""
        return [tuple(line.split()) for line in read(self.log).splitlines()]


@pytest.fixture(params=WHERE)
def gpus(request, tmp_path):
    return Gpus(request.param, request, tmp_path)


def test_a_gpu_with_a_foreign_process_never_gets_a_job(gpus):
    a, _ = gpus.hosts
    gpus.state(a, "gpu 0 3\ngpu 1 40211\napp 1 4242 40200\n")
    gpus.setup([(a, 2, True)], [(f"j{i}", 1) for i in range(4)])
    peg = gpus.start()
    try:
        assert peg.wait() == 0, peg.said()
    finally:
        peg.stop()

    assert sorted(gpus.ran()) == [(f"j{i}", a, "0") for i in range(4)]
    assert peg.said().count("skipping GPU 1") == 1
    assert (f"pegasus: host {a}: skipping GPU 1, in use by others (GPU 1: 1 compute process "
            "(pid 4242)); it takes no job until it is free") in peg.said()


@pytest.mark.slow  # 3 s or more
def test_a_gpu_freed_by_others_is_used_within_seconds(gpus):
    a, _ = gpus.hosts
    gpus.state(a, "gpu 0 30000\ngpu 1 3\n")  # memory in use, no process listed
    gpus.setup([(a, 2, True)], [("big", 2)])
    peg = gpus.start()
    try:
        wait_for(peg.saw("skipping GPU 0"), what="Pegasus to skip GPU 0")
        assert gpus.ran() == []
        gpus.state(a, "gpu 0 3\ngpu 1 3\n")
        assert peg.wait(timeout=30) == 0, peg.said()  # the deadline: within seconds
    finally:
        peg.stop()

    assert gpus.ran() == [("big", a, "0,1")]
    assert f"pegasus: host {a}: no GPU is in use by others now" in peg.said()


def test_a_failing_probe_sends_jobs_to_other_hosts(gpus):
    a, b = gpus.hosts
    gpus.state(a, f"fail {DRIVER}\n")
    gpus.state(b, "gpu 0 3\ngpu 1 3\n")
    gpus.setup([(a, 2, True), (b, 2, True)], [(f"j{i}", 1) for i in range(3)])
    peg = gpus.start()
    try:
        assert peg.wait() == 0, peg.said()
    finally:
        peg.stop()

    assert {host for _, host, _ in gpus.ran()} == {b}
    assert len(gpus.ran()) == 3
    assert peg.said().count("its GPU probe failed") == 1
    assert (f"pegasus: host {a}: its GPU probe failed: 'sh {gpus.fake} {gpus.dir}/state-{a} "
            "--query-gpu=index,uuid,memory.used,memory.total --format=csv,noheader,nounits' "
            f"exited with status 9: {DRIVER}; it takes no job until a probe succeeds "
            "(Pegasus tries again)") in peg.said()
