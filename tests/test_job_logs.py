"""Job logs (issue 12): every job's output in <log dir>/<id>.log as it came,
joblog.tsv's rows, --log-dir, --no-logs, and ``pegasus log ID``."""
import csv
import os
import stat
import subprocess
import sys

import pytest

from fakes import FakeJob, run_app
from helpers import run_in_process

PROGRESS = (("stdout", b"start\n"), ("stderr", b"warn\n"), ("stdout", b"10%\r"),
            ("stdout", b"50%\r100%"), ("stdout", b"\ndone"))


def joblog(folder):
    with open(folder / "joblog.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_each_job_s_output_is_logged_raw_as_it_came(tmp_path):
    out = run_app(tmp_path, queue=["talk", "quiet"], scripts={"talk": FakeJob(PROGRESS)})

    assert out.status == 0, out.output
    logs = tmp_path / "logs"
    assert (logs / "1.log").read_bytes() == b"start\nwarn\n10%\r50%\r100%\ndone"
    assert not (logs / "2.log").exists()  # a job that printed nothing has no file
    assert "[node-1] 50%" not in out.output  # the terminal shows fewer \r updates


def test_joblog_has_a_row_per_job_with_its_outcome(tmp_path):
    out = run_app(tmp_path, nodes=["n1", "n2"], queue=["ok", "bad", "killed", "lost",
                                                      "tab\there"],
                  scripts={"bad": FakeJob(exit=3), "killed": FakeJob(signal=9),
                           "lost": FakeJob(lost_after=0)})

    rows = {row["command"]: row for row in joblog(tmp_path / "logs")}
    assert list(rows) == sorted(rows, key=lambda c: int(rows[c]["job_id"]))  # in end order
    assert sorted(int(row["job_id"]) for row in rows.values()) == [1, 2, 3, 4, 5]
    got = {c: (r["exit_status"], r["signal"], r["outcome"]) for c, r in rows.items()}
    assert got == {"ok": ("0", "", "ok"), "bad": ("3", "", "failed"),
                   "killed": ("137", "KILL", "killed"), "lost": ("", "", "interrupted"),
                   "tab\\there": ("0", "", "ok")}
    assert {row["sub_node"] for row in rows.values()} <= {"[n1]", "[n2]"}
    assert all(float(row["start"]) > 1e9 and float(row["runtime"]) >= 0
               for row in rows.values())
    assert out.status == 1


def test_broadcast_logs_each_sub_node_in_its_own_file(tmp_path):
    out = run_app(tmp_path, "b", nodes=[{"hostname": "n1", "gpu": ["0", "1"]}],
                  queue=["talk"], scripts={"talk": FakeJob(PROGRESS[:2])})

    assert out.status == 0, out.output
    logs = tmp_path / "logs"
    assert sorted(os.listdir(logs)) == ["1.n1_gpu=0.log", "1.n1_gpu=1.log", "joblog.tsv"]
    assert (logs / "1.n1_gpu=0.log").read_bytes() == b"start\nwarn\n"
    assert [row["sub_node"] for row in joblog(logs)] == ["[n1 (gpu=0)]", "[n1 (gpu=1)]"]


def test_pegasus_log_of_a_broadcast_job_shows_sub_nodes_in_number_order(tmp_path):
    nodes = ["node-9", "node-10", "node-2"]
    out = run_app(tmp_path, "b", nodes=nodes, queue=["talk"],
                  scripts={"talk": FakeJob(PROGRESS[:1])})
    assert out.status == 0, out.output

    shown = run_in_process(["log", "1"], tmp_path)
    headers = [line for line in shown.stdout.splitlines() if line.startswith("==> ")]
    assert [h.split(".")[1] for h in headers] == ["node-2", "node-9", "node-10"]


def test_a_log_that_cannot_be_written_is_said_once_and_the_run_goes_on(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to make a /dev/full device node")
    (tmp_path / "logs").mkdir()
    os.mknod(tmp_path / "logs" / "1.log", stat.S_IFCHR | 0o600, os.makedev(1, 7))  # full
    out = run_app(tmp_path, queue=["talk", "talk"], scripts={"talk": FakeJob(PROGRESS)})

    assert out.status == 0, out.output
    assert out.output.count("cannot write the job log") == 1, out.output
    assert "no space left on its device; the job goes on" in out.output
    assert (tmp_path / "logs" / "2.log").read_bytes() == b"start\nwarn\n10%\r50%\r100%\ndone"
    assert [row["outcome"] for row in joblog(tmp_path / "logs")] == ["ok", "ok"]


def write_run(folder, queue):
    (folder / "hosts.yaml").write_text("- localhost\n")
    (folder / "queue.yaml").write_text(queue)


def test_log_dir_and_no_logs(tmp_path):
    write_run(tmp_path, "- printf 'a\\rb'\n")
    res = run_in_process(["q", "--log-dir", "elsewhere"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "elsewhere" / "1.log").read_bytes() == b"a\rb"
    assert not (tmp_path / "logs").exists()

    write_run(tmp_path, "- echo two\n")
    res = run_in_process(["q", "--no-logs"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "=== run #2 'echo two' ===" in res.stdout  # ids go on without logs
    assert sorted(os.listdir(tmp_path / "elsewhere")) == ["1.log", "joblog.tsv"]
    assert not (tmp_path / "logs").exists()


def test_pegasus_log_prints_a_job_s_log(tmp_path):
    write_run(tmp_path, "- printf 'one\\rtwo\\n'\n- echo err >&2; exit 4\n- 'true'\n")
    assert run_in_process(["q"], tmp_path).returncode == 1

    shown = run_in_process(["log", "1"], tmp_path, text=False)
    assert shown.returncode == 0 and shown.stdout == b"one\rtwo\n"
    followed = run_in_process(["log", "-f", "2"], tmp_path)
    assert followed.returncode == 1 and followed.stdout == "err\n"  # job 2 failed
    silent = run_in_process(["log", "3"], tmp_path)
    assert silent.returncode == 0 and silent.stdout == ""  # ended, printed nothing
    assert run_in_process(["log", "-f", "3"], tmp_path).returncode == 0
    missing = run_in_process(["log", "9"], tmp_path)
    assert missing.returncode == 2
    assert "logs: no log of job 9" in missing.stderr
    bad = run_in_process(["log", "x"], tmp_path)
    assert bad.returncode == 2 and "a job id is a whole number" in bad.stderr


def test_log_f_of_a_job_whose_pegasus_ends_between_two_looks_prints_its_end(tmp_path,
                                                                             monkeypatch):
    """Pegasus writes the job's row and exits between the follower's look at
    joblog.tsv and its look for a running Pegasus: the job ended, not "stopped mid-way"."""
    from pegasus import logcmd

    write_run(tmp_path, "- echo first\n")
    assert run_in_process(["q"], tmp_path).returncode == 0
    table = tmp_path / "logs" / "joblog.tsv"
    rows = table.read_text()
    table.write_text(rows.splitlines(keepends=True)[0])  # the header: the job still runs

    def ends_meanwhile(queue_path):
        table.write_text(rows)
        return False
    monkeypatch.setattr(logcmd, "pegasus_running", ends_meanwhile)
    followed = run_in_process(["log", "-f", "1"], tmp_path)
    assert (followed.returncode, followed.stdout, followed.stderr) == (0, "first\n", "")


@pytest.mark.parametrize("args, words", [
    (["q", "--no-logs", "--log-dir", "d"], "--no-logs and --log-dir"),
    (["requeue", "--no-logs"], "--no-logs is for queue and broadcast modes"),
    (["q", "-f"], "unknown mode or option: -f"),
    (["l", "--follow"], "unknown mode or option: -f"),
])
def test_log_options_in_the_wrong_place_are_usage_errors(tmp_path, args, words):
    write_run(tmp_path, "- echo x\n")
    res = run_in_process(args, tmp_path)
    assert res.returncode == 2 and words in res.stderr, res.stderr
    assert (tmp_path / "queue.yaml").read_text() == "- echo x\n"


def test_a_log_folder_that_cannot_be_made_stops_before_anything_is_taken(tmp_path):
    write_run(tmp_path, "- echo x\n")
    (tmp_path / "file").write_text("")
    res = run_in_process(["q", "--log-dir", "file/logs"], tmp_path)

    assert res.returncode == 74, res.stdout + res.stderr
    assert "file/logs: cannot create the job log folder" in res.stderr
    assert "--no-logs" in res.stderr
    assert (tmp_path / "queue.yaml").read_text() == "- echo x\n"
    assert not (tmp_path / "consumed.yaml").exists()


def test_a_retried_job_s_log_holds_every_attempt_and_log_f_reports_its_end(tmp_path):
    write_run(tmp_path, "- command: '[ -e flag ] && echo two || { touch flag; echo one; exit 1; }'"
                        "\n  retries: 1\n")
    assert run_in_process(["q"], tmp_path).returncode == 0

    assert [(row["job_id"], row["exit_status"], row["outcome"])
            for row in joblog(tmp_path / "logs")] == [("1", "1", "retried"), ("1", "0", "ok")]
    followed = run_in_process(["log", "-f", "1"], tmp_path)
    assert followed.stdout == "one\n=== attempt 2 on [localhost] ===\ntwo\n"
    assert followed.returncode == 0  # its last attempt succeeded


def test_log_with_its_output_closed_says_so_and_exits_74(tmp_path):
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    (tmp_path / "queue.yaml").write_text("- echo hi\n")
    ran = subprocess.run([sys.executable, "-m", "pegasus", "q"], cwd=tmp_path,
                         capture_output=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    res = subprocess.run(["sh", "-c", 'exec "$0" -m pegasus log 1 >&-', sys.executable],
                         cwd=tmp_path, stderr=subprocess.PIPE, text=True, timeout=60)
    assert res.returncode == 74, res.stderr
    assert res.stderr == "pegasus: standard output is closed\n"
