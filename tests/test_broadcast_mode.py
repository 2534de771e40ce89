"""Broadcast mode end to end: the real ``pegasus b`` against real sshd nodes.

Jobs append ``start K NODE`` / ``end K NODE`` lines to one log file in the
nodes' shared /tmp (an O_APPEND write of a short line is atomic), so the
order of the lines shows whether any node started step K+1 before every
node had finished step K.
"""

import os
import signal
import subprocess
import sys
import threading
import uuid

import pytest
import yaml

from helpers import wait_for


@pytest.fixture
def shared_dir(cluster):
    path = f"/tmp/pegasus-bc-{uuid.uuid4().hex}"
    cluster.ssh(cluster.aliases[0], f"mkdir -p {path} && chmod 777 {path}", check=True)
    yield path
    cluster.ssh(cluster.aliases[0], f"rm -rf {path}")


def hosts_with_delays(cluster, delays=("0.3", "0", "0.15", "0.05")):
    return "".join(f"- hostname: {alias}\n  delay: '{delay}'\n"
                   for alias, delay in zip(cluster.aliases, delays))


def read_remote(cluster, path):
    return cluster.ssh(cluster.aliases[0], f"cat {path}", check=True).stdout


def logged_steps(text):
    return [line.split() for line in text.splitlines() if line.strip()]


def test_terraforming_runs_every_step_on_every_node_in_order(cluster, shared_dir,
                                                             run_pegasus, tmp_path):
    (tmp_path / "hosts.yaml").write_text("".join(f"- {a}\n" for a in cluster.aliases))
    ws = f"{shared_dir}/{{{{ hostname }}}}-workspace"
    (tmp_path / "queue.yaml").write_text(
        f"- mkdir {ws}\n"
        f"- cd {ws} && printf 'echo installed > done' > install.sh\n"
        f"- cd {ws} && . ./install.sh\n")
    res = run_pegasus(["b", "--ssh-config", cluster.ssh_config], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    for alias in cluster.aliases:
        done = read_remote(cluster, f"{shared_dir}/{alias}-workspace/done")
        assert done == "installed\n"
    assert "3 steps, all succeeded" in res.stdout
    assert yaml.safe_load((tmp_path / "queue.yaml").read_text()) is None
    taken = yaml.safe_load((tmp_path / "consumed.yaml").read_text())
    assert [e["command"].split(" && ")[-1] for e in taken] == [
        f"mkdir {ws}", "printf 'echo installed > done' > install.sh", ". ./install.sh"]


def test_lock_step_no_node_starts_a_step_before_all_finished_the_last(
        cluster, shared_dir, run_pegasus, tmp_path):
    log = f"{shared_dir}/log"
    (tmp_path / "hosts.yaml").write_text(hosts_with_delays(cluster))
    (tmp_path / "queue.yaml").write_text(
        "- command: >-\n"
        f"    echo start {{{{k}}}} {{{{hostname}}}} >> {log};\n"
        f"    sleep {{{{delay}}}};\n"
        f"    echo end {{{{k}}}} {{{{hostname}}}} >> {log}\n"
        "  k: [1, 2, 3, 4, 5]\n")
    res = run_pegasus(["b", "--ssh-config", cluster.ssh_config, "-p", "0"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    events = logged_steps(read_remote(cluster, log))
    assert len(events) == 5 * 2 * len(cluster.aliases)
    for k in range(1, 5):
        last_end = max(i for i, (what, step, _) in enumerate(events)
                       if what == "end" and step == str(k))
        first_next = min(i for i, (what, step, _) in enumerate(events)
                         if what == "start" and step == str(k + 1))
        assert last_end < first_next, f"a node started step {k + 1} before step {k} ended"
    for k in range(1, 6):
        assert sorted(n for what, step, n in events if what == "end" and step == str(k)) \
            == sorted(cluster.aliases)


def test_error_aborts_stops_after_the_failing_step(cluster, shared_dir, run_pegasus,
                                                   tmp_path):
    bad = cluster.aliases[1]
    (tmp_path / "hosts.yaml").write_text("".join(f"- {a}\n" for a in cluster.aliases))
    queue = (f"- echo one {{{{hostname}}}} >> {shared_dir}/log\n"
             f"- test {{{{hostname}}}} != {bad}\n"
             f"- echo three {{{{hostname}}}} >> {shared_dir}/log\n"
             "- echo four\n")
    (tmp_path / "queue.yaml").write_text(queue)
    res = run_pegasus(["b", "-e", "--ssh-config", cluster.ssh_config], cwd=tmp_path)
    assert res.returncode == 1
    assert f"step 2 'test {{{{hostname}}}} != {bad}': 1 of 4 sub-nodes failed" in res.stdout
    assert f"[{bad}] exit 1" in res.stdout
    assert "no more entries are taken" in res.stdout
    lines = read_remote(cluster, f"{shared_dir}/log").split()
    assert "three" not in lines and lines.count("one") == 4
    left = yaml.safe_load((tmp_path / "queue.yaml").read_text())
    assert left == [f"echo three {{{{hostname}}}} >> {shared_dir}/log", "echo four"]


def test_without_error_aborts_every_step_runs_and_the_summary_shows_divergence(
        cluster, shared_dir, run_pegasus, tmp_path):
    bad = cluster.aliases[2]
    (tmp_path / "hosts.yaml").write_text("".join(f"- {a}\n" for a in cluster.aliases))
    (tmp_path / "queue.yaml").write_text(f"- 'true'\n- test {{{{hostname}}}} != {bad}\n"
                                         "- echo last\n")
    res = run_pegasus(["b", "--ssh-config", cluster.ssh_config], cwd=tmp_path)
    assert res.returncode == 1
    summary = res.stdout[res.stdout.index("3 steps, 1 with failures:"):]
    assert "step 1 'true': 4 ok" in summary
    assert f"step 2 'test {{{{hostname}}}} != {bad}': 3 ok, 1 failed: [{bad}] exit 1" in summary
    assert "step 3 'echo last': 4 ok" in summary


def test_parametrized_entry_is_broadcast_job_by_job(cluster, shared_dir, run_pegasus,
                                                    tmp_path):
    (tmp_path / "hosts.yaml").write_text("".join(f"- {a}\n" for a in cluster.aliases[:2]))
    (tmp_path / "queue.yaml").write_text(
        f"- command: echo {{{{v}}}} {{{{hostname}}}} >> {shared_dir}/log\n  v: [a, b, c]\n")
    res = run_pegasus(["b", "--ssh-config", cluster.ssh_config], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    values = [line.split()[0] for line in read_remote(cluster, f"{shared_dir}/log").splitlines()]
    assert values == ["a", "a", "b", "b", "c", "c"]


@pytest.mark.slow
def test_unreachable_host_means_nothing_is_taken(cluster, run_pegasus, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(open(cluster.ssh_config).read()
                      + "\nHost dead\n    HostName 127.0.0.1\n    Port 9\n"
                      "    User nobody\n    ConnectTimeout 5\n")
    (tmp_path / "hosts.yaml").write_text(f"- {cluster.aliases[0]}\n- dead\n")
    (tmp_path / "queue.yaml").write_text("- echo hi\n")
    res = run_pegasus(["b", "--ssh-config", str(config)], cwd=tmp_path)
    assert res.returncode == 3
    assert "host dead" in res.stderr
    assert (tmp_path / "queue.yaml").read_text() == "- echo hi\n"
    assert not (tmp_path / "consumed.yaml").exists()


def test_ctrl_c_lets_the_step_finish_everywhere_and_takes_nothing_more(
        cluster, shared_dir, run_pegasus, tmp_path):
    release = f"{shared_dir}/release"
    (tmp_path / "hosts.yaml").write_text("".join(f"- {a}\n" for a in cluster.aliases))
    (tmp_path / "queue.yaml").write_text(
        f"- echo started {{{{hostname}}}} >> {shared_dir}/log;"
        f" while [ ! -e {release} ]; do sleep 0.05; done; echo finished\n"
        "- echo second\n")
    proc = subprocess.Popen([sys.executable, "-m", "pegasus", "b", "--ssh-config",
                             cluster.ssh_config], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: read_remote(cluster, f"{shared_dir}/log").count("started") == 4
                 if cluster.ssh(cluster.aliases[0], f"test -e {shared_dir}/log").returncode == 0
                 else False, what="all four nodes to start")
        os.killpg(proc.pid, signal.SIGINT)
        wait_for(lambda: any("Ctrl-c" in line for line in lines), what="the Ctrl-c notice")
        cluster.ssh(cluster.aliases[0], f"touch {release}", check=True)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    out = "".join(lines)
    assert out.count("] finished") == 4
    assert "second" not in out.replace("- echo second", "")
    assert (tmp_path / "queue.yaml").read_text() == "- echo second\n"
