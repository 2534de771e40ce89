"""``b --fold`` and ``b -i`` end to end: the real ``pegasus`` against real sshd nodes.

Twelve sub-nodes on the session's four sshd's: an ssh_config of our own names
``web-1`` .. ``web-12``, three on each sshd (the same server, key and user as
the cluster's own aliases), so the sub-node names fold into ranges.
"""

import re

import yaml

from helpers import run_in_process

STEPS = 20
# node 4 and 9 print another text; every sub-node sleeps 0 to 90 ms first, at random
REPORT = ("sleep 0.0$(( $(od -An -N1 -tu1 /dev/urandom) % 10 )); "
          "case {{ hostname }} in web-4|web-9) echo 'kernel 5.4';; "
          "*) echo 'kernel 6.1'; echo 'step {{ step }} ok';; esac")


def twelve_aliases(cluster, tmp_path):
    """An ssh_config with web-1 .. web-12, each a copy of a cluster alias's stanza."""
    stanzas = re.split(r"^Host ", open(cluster.ssh_config).read(), flags=re.M)[1:]
    body = {s.split("\n", 1)[0].strip(): s.split("\n", 1)[1] for s in stanzas}
    config = tmp_path / "ssh_config"
    config.write_text("".join(f"Host web-{i}\n{body[cluster.aliases[(i - 1) % 4]]}\n"
                              for i in range(1, 13)))
    (tmp_path / "hosts.yaml").write_text("".join(f"- web-{i}\n" for i in range(1, 13)))
    return str(config)


def test_twelve_nodes_fold_into_two_groups_in_every_one_of_20_steps(cluster, tmp_path,
                                                                    run_pegasus):
    config = twelve_aliases(cluster, tmp_path)
    (tmp_path / "queue.yaml").write_text(yaml.safe_dump(
        [{"command": REPORT, "step": str(k)} for k in range(1, STEPS + 1)]))

    res = run_pegasus(["b", "--fold", "--ssh-config", config], cwd=tmp_path, timeout=120)

    assert res.returncode == 0, res.stdout + res.stderr
    printed = [line for line in res.stdout.splitlines() if not line.startswith("pegasus: ")]
    assert printed == [line for k in range(1, STEPS + 1) for line in (
        "=== web-[1-3,5-8,10-12] (10): exit 0 ===", "kernel 6.1", f"step {k} ok",
        "=== web-[4,9] (2): exit 0 ===", "kernel 5.4")]
    assert f"{STEPS} steps, all succeeded on every sub-node:" in res.stdout


def test_ignore_errors_goes_on_after_a_failed_step(cluster, tmp_path):
    hosts = "".join(f"- {alias}\n" for alias in cluster.aliases[:2])
    (tmp_path / "hosts.yaml").write_text(hosts)
    fails_on_one = f"test {{{{ hostname }}}} != {cluster.aliases[1]}"
    (tmp_path / "queue.yaml").write_text(yaml.safe_dump([fails_on_one, "echo after"]))

    res = run_in_process(["b", "-i", "--ssh-config", cluster.ssh_config], cwd=tmp_path)

    assert res.returncode == 1, res.stdout + res.stderr
    assert f"pegasus:   [{cluster.aliases[1]}] exit 1" in res.stdout
    assert res.stdout.count("] after") == 2
    assert yaml.safe_load((tmp_path / "queue.yaml").read_text()) is None


def test_progress_bars_drawn_at_different_speeds_fold_together(cluster, tmp_path, run_pegasus):
    """Without --fold a terminal sees a progress update at most every 2 s: a node
    that draws slowly would show more of them than a fast one, and fold apart."""
    hosts = cluster.aliases[:2]
    (tmp_path / "hosts.yaml").write_text("".join(f"- {alias}\n" for alias in hosts))
    slow_on_one = (f"[ {{{{ hostname }}}} = {hosts[1]} ] && pause=2.2 || pause=0; "
                   "for p in 10 50 90; do printf '%s%%\\r' $p; sleep $pause; done; "
                   "printf 'done\\n'")
    (tmp_path / "queue.yaml").write_text(yaml.safe_dump([slow_on_one]))

    res = run_pegasus(["b", "--fold", "--ssh-config", cluster.ssh_config], cwd=tmp_path)

    assert res.returncode == 0, res.stdout + res.stderr
    printed = [line for line in res.stdout.splitlines() if not line.startswith("pegasus: ")]
    assert printed == [f"=== {hosts[0][:-1]}[1-2] (2): exit 0 ===", "10%", "done"]
