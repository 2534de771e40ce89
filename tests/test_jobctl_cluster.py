"""``pegasus status``, ``stop`` and ``kill`` from another process, against a real
Pegasus on the sshd cluster (issue 12's "Done means")."""
import json
import os
import signal
import subprocess
import sys
import uuid

import pytest
import yaml

from helpers import wait_for, write

pytestmark = pytest.mark.slow


@pytest.fixture
def marks():
    """Files in which each job notes its node's address and its process group."""
    prefix = f"/tmp/pegasus-jc-{uuid.uuid4().hex}"

    class Marks:
        command = (f"echo $SSH_CONNECTION $(cut -d' ' -f5 /proc/$$/stat) "
                   f"> {prefix}-{{{{job_id}}}}; exec sleep 300")

        @staticmethod
        def of(job_id):
            """(the node's address, the job's process group) once the job wrote them."""
            try:
                with open(f"{prefix}-{job_id}") as f:
                    fields = f.read().split()
            except FileNotFoundError:
                return None
            return (fields[2], int(fields[4])) if len(fields) == 5 else None
    yield Marks
    subprocess.run(f"rm -f {prefix}-*", shell=True, check=False)


def group_alive(cluster, pgid):
    return cluster.ssh("node-1", f"pgrep -g {pgid}").returncode == 0


def start(folder, cluster, commands, hosts=("node-1", "node-2")):
    write(folder / "hosts.yaml", "".join(f"- {h}\n" for h in hosts))
    write(folder / "queue.yaml", yaml.safe_dump([{"command": c} for c in commands]))
    out = open(folder / "pegasus.out", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "pegasus", "q", "--ssh-config",
                             cluster.ssh_config], cwd=folder, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return proc


def pegasus(folder, *args):
    return subprocess.run([sys.executable, "-m", "pegasus", *args], cwd=folder,
                          capture_output=True, text=True, timeout=60)


def running_ids(folder, count):
    res = pegasus(folder, "status", "--json")
    doc = json.loads(res.stdout) if res.returncode == 0 else None
    return doc if doc and len(doc["running"]) == count else None


def ended(proc):
    try:
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_status_json_matches_what_runs_on_the_nodes(tmp_path, cluster, marks):
    proc = start(tmp_path, cluster, [marks.command, marks.command, "echo later"])
    try:
        doc = wait_for(lambda: running_ids(tmp_path, 2), what="two running jobs")
        seen = {job["id"]: wait_for(lambda job=job: marks.of(job["id"]), what="a mark")
                for job in doc["running"]}
        assert doc["pid"] == proc.pid and doc["state"] == "running"
        assert doc["counts"]["queued_entries"] == 1
        assert sorted(n["state"] for n in doc["nodes"]) == ["up", "up"]
        for job in doc["running"]:
            address, pgid = seen[job["id"]]
            assert address == cluster.address(job["node"].strip("[]")), job
            assert group_alive(cluster, pgid)
            assert job["command"].endswith("exec sleep 300")
    finally:
        proc.send_signal(signal.SIGKILL)  # leaves its socket behind
        ended(proc)
    res = pegasus(tmp_path, "status")
    assert res.returncode == 3 and res.stdout.startswith("no Pegasus runs on "), res.stdout
    assert os.listdir(os.path.join(os.environ["XDG_RUNTIME_DIR"], "pegasus")) == []


def test_kill_stops_one_job_and_its_remote_process_group_the_others_run_on(
        tmp_path, cluster, marks):
    proc = start(tmp_path, cluster, [marks.command, marks.command, "echo next"])
    try:
        wait_for(lambda: running_ids(tmp_path, 2), what="two running jobs")
        (_, first), (_, second) = (wait_for(lambda i=i: marks.of(i), what="a mark")
                                   for i in (1, 2))
        res = pegasus(tmp_path, "kill", "1")
        assert res.returncode == 0, res.stdout + res.stderr
        wait_for(lambda: not group_alive(cluster, first), what="job 1's process group gone")
        doc = wait_for(lambda: (lambda d: d and d["run"]["done"] == 2 and d)(
            running_ids(tmp_path, 1)), what="the next job done, job 2 running")
        assert [job["id"] for job in doc["running"]] == [2]
        assert doc["run"] == {"done": 2, "running": 1, "failed": 1}
        assert group_alive(cluster, second)
        assert pegasus(tmp_path, "kill", "1").returncode == 2  # not running any more
    finally:
        pegasus(tmp_path, "stop", "--now")
        status = ended(proc)
    output = (tmp_path / "pegasus.out").read_text()
    assert status == 130, output
    assert "killed by user, exit 143" in (tmp_path / "failed.yaml").read_text()
    rows = (tmp_path / "logs" / "joblog.tsv").read_text().splitlines()
    assert [r.split("\t")[7] for r in rows if r.startswith("1\t")] == ["killed"]


def test_stop_then_stop_now_from_another_process(tmp_path, cluster, marks):
    proc = start(tmp_path, cluster, [marks.command, marks.command, "echo never"])
    try:
        wait_for(lambda: running_ids(tmp_path, 2), what="two running jobs")
        groups = [wait_for(lambda i=i: marks.of(i), what="a mark")[1] for i in (1, 2)]
        res = pegasus(tmp_path, "stop")
        assert res.returncode == 0 and "takes no more jobs" in res.stdout, res.stdout
        doc = json.loads(pegasus(tmp_path, "status", "--json").stdout)
        assert doc["state"] == "stopping" and len(doc["running"]) == 2
        assert all(group_alive(cluster, g) for g in groups)
        res = pegasus(tmp_path, "stop", "--now")
        assert res.returncode == 0 and "stopping 2 running jobs" in res.stdout, res.stdout
        status = ended(proc)
    finally:
        ended(proc)
    assert status == 130
    wait_for(lambda: not any(group_alive(cluster, g) for g in groups),
             what="the jobs' process groups gone")
    assert "echo never" in (tmp_path / "queue.yaml").read_text()
    assert pegasus(tmp_path, "stop").returncode == 3
