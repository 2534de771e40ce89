"""Job logs on the sshd cluster (issue 12): byte for byte, joblog rows,
``pegasus log -f`` following a running job, and a ``kill -9`` of Pegasus."""
import csv
import os
import signal
import subprocess
import sys
import uuid

import pytest

from helpers import run_in_process, wait_for, write

BIG = 100_000  # one line of 100 KB


def setup_run(folder, cluster, queue_lines, hosts="- node-1\n- node-2\n"):
    write(folder / "hosts.yaml", hosts)
    write(folder / "queue.yaml", "".join(f"- {line}\n" for line in queue_lines))
    return ["--ssh-config", cluster.ssh_config]


def rows(folder):
    with open(folder / "logs" / "joblog.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def logged(folder, job_id):
    path = folder / "logs" / f"{job_id}.log"
    return path.read_bytes() if path.exists() else b""


@pytest.fixture
def flag(cluster):
    """A file a job waits for; ``touch()`` creates it on the node."""
    path = f"/tmp/pegasus-flag-{uuid.uuid4().hex}"

    class Flag:
        wait = f"while [ ! -e {path} ]; do sleep 0.05; done"

        @staticmethod
        def touch():
            cluster.ssh("node-1", f"touch {path}", check=True)
    yield Flag
    cluster.ssh("node-1", f"rm -f {path}")


def spawn(folder, args, name):
    out = open(folder / f"{name}.out", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "pegasus", *args], cwd=folder,
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return proc


def test_logs_match_the_jobs_output_byte_for_byte(tmp_path, cluster):
    jobs = {
        1: (f"\"head -c {BIG} /dev/zero | tr '\\\\0' x; echo\"", b"x" * BIG + b"\n"),
        2: ("\"printf '10%%\\\\r50%%\\\\r100%%\\\\ndone'\"", b"10%\r50%\r100%\ndone"),
        3: ("\"printf 'tab\\\\there\\\\n'; echo oops >&2; exit 3\"", b"tab\there\noops\n"),
        4: ("\"echo bye\"", b"bye\n"),
    }
    args = setup_run(tmp_path, cluster, [command for command, _ in jobs.values()])

    res = run_in_process(["q", *args], tmp_path)

    assert res.returncode == 1, res.stdout + res.stderr  # job 3 exits 3
    for job_id, (_, output) in jobs.items():
        assert logged(tmp_path, job_id) == output, job_id
    got = {int(row["job_id"]): row for row in rows(tmp_path)}
    assert sorted(got) == [1, 2, 3, 4]
    assert [got[i]["outcome"] for i in (1, 2, 3, 4)] == ["ok", "ok", "failed", "ok"]
    assert got[3]["exit_status"] == "3" and got[4]["command"] == "echo bye"
    assert {got[i]["sub_node"] for i in got} <= {"[node-1]", "[node-2]"}


def test_log_f_follows_a_running_job_to_its_end(tmp_path, cluster, flag):
    args = setup_run(tmp_path, cluster, [f"\"echo first; {flag.wait}; echo second\""],
                     hosts="- node-1\n")
    pegasus = spawn(tmp_path, ["q", *args], "pegasus")
    follower = None
    try:
        wait_for(lambda: logged(tmp_path, 1) == b"first\n", what="the job's first line")
        follower = spawn(tmp_path, ["log", "-f", "1"], "follower")
        wait_for(lambda: (tmp_path / "follower.out").read_bytes() == b"first\n",
                 what="the follower printing the first line")
        assert follower.poll() is None, "log -f stopped before the job ended"
        flag.touch()
        assert follower.wait(timeout=30) == 0
        assert (tmp_path / "follower.out").read_bytes() == b"first\nsecond\n"
        assert pegasus.wait(timeout=30) == 0
    finally:
        for proc in (pegasus, follower):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def test_kill_9_of_pegasus_leaves_the_partial_log(tmp_path, cluster, flag):
    args = setup_run(tmp_path, cluster, [f"\"echo partial; {flag.wait}; echo never\""],
                     hosts="- node-1\n")
    pegasus = spawn(tmp_path, ["q", *args], "pegasus")
    try:
        wait_for(lambda: logged(tmp_path, 1) == b"partial\n", what="the job's first line")
    finally:
        os.kill(pegasus.pid, signal.SIGKILL)
        pegasus.wait(timeout=30)
    flag.touch()  # lets the remote job end, if its watchdog has not stopped it yet

    assert logged(tmp_path, 1) == b"partial\n"
    assert not (tmp_path / "logs" / "joblog.tsv").exists()  # it never ended here
    res = run_in_process(["log", "-f", "1"], tmp_path)
    assert res.returncode == 2 and res.stdout == "partial\n", res.stdout + res.stderr
    assert "log ends here: no Pegasus runs on queue.yaml" in res.stderr
