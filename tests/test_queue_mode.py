"""Queue mode end to end: the real ``pegasus q`` CLI against real sshd nodes.

Every test works in its own ``tmp_path`` with its own hosts.yaml and
queue.yaml. Jobs leave evidence on the nodes: they append a line with a tag
and the server address of their SSH session (``$SSH_CONNECTION``) to a
uniquely named file under /tmp, read back with ``cluster.ssh``. The nodes of
the local test cluster share one file system, so the address in the line is
what tells where a job ran.

Nothing waits with a fixed sleep: ``wait_for`` polls with a deadline.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import uuid

import pytest
import yaml

from helpers import DONE_FRAME, LABELED, RUN_FRAME, wait_for, write

# The server address of the job's SSH session: says which node ran it.
WHERE = "$(echo $SSH_CONNECTION | cut -d' ' -f3)"
TAKEN = re.compile(r"^# taken (.+) for (\[.*\])$")


# ---------------------------------------------------------------- helpers

def write_atomic(path, text):
    """Replace a file the way an editor or a careful script does."""
    tmp = str(path) + ".tmp-" + uuid.uuid4().hex
    write(tmp, text)
    os.replace(tmp, str(path))


def read(path):
    with open(str(path)) as f:
        return f.read()


def read_bytes(path):
    with open(str(path), "rb") as f:
        return f.read()


def load_as_typed(text):
    """YAML with every scalar kept as the string typed (no 1.1 rewriting)."""
    return yaml.load(text, Loader=yaml.BaseLoader)


def queue_entries(path):
    return load_as_typed(read(path)) or []


def consumed(tmp_path):
    """(labels from the '# taken' comments, canonical entries) of consumed.yaml."""
    text = read(tmp_path / "consumed.yaml")
    labels = []
    for line in text.splitlines():
        if line.startswith("#"):
            m = TAKEN.match(line)
            assert m, "unexpected comment in consumed.yaml: %r" % line
            labels.append(m.group(2))
    return labels, load_as_typed(text) or []


def labeled(stdout):
    """[(label, text)] for every '[label] text' line of Pegasus's output."""
    out = []
    for line in stdout.splitlines():
        m = LABELED.match(line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def jobs_of(stdout):
    """Every job in the output: dicts label/command/lines/done, in start order.

    A sub-node runs one job at a time, so its lines between its run and done
    frames belong to that job.
    """
    jobs, current = [], {}
    for label, text in labeled(stdout):
        run = RUN_FRAME.match(text)
        done = DONE_FRAME.match(text)
        if run:
            assert label not in current, "%s started a job before the last one was done" % label
            current[label] = {"label": label, "command": run.group(1), "lines": [], "done": None}
            jobs.append(current[label])
        elif done:
            assert label in current, "%s: done frame without a run frame" % label
            current.pop(label)["done"] = done.group(1)
        else:
            assert label in current, "%s printed %r outside a job" % (label, text)
            current[label]["lines"].append(text)
    return jobs


def summary_lines(stdout):
    return [line for line in stdout.splitlines() if line.startswith("pegasus: ")]


def hostname_of(label):
    return label[1:-1].split(" (", 1)[0]


class Marker:
    """A unique file under /tmp on the nodes; jobs append 'tag address' lines."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.path = "/tmp/pegasus-qm-" + uuid.uuid4().hex
        self.by_ip = {cluster.address(a): a for a in cluster.aliases}

    def cmd(self, tag):
        """A shell command appending 'tag <address of the node>' to the file."""
        return "echo %s %s >> %s" % (tag, WHERE, self.path)

    def lines(self, alias="node-1"):
        res = self.cluster.ssh(alias, "cat %s 2>/dev/null; true" % self.path)
        assert res.returncode == 0, res.stderr
        return res.stdout.splitlines()

    def records(self):
        """[(tag, alias that ran it)] in the order they were written."""
        out = []
        for line in self.lines():
            tag, _, ip = line.rpartition(" ")
            assert ip in self.by_ip, "line %r: %r is no node's address" % (line, ip)
            out.append((tag, self.by_ip[ip]))
        return out

    def exists(self, suffix=""):
        res = self.cluster.ssh("node-1", "test -e %s%s && echo yes || echo no"
                               % (self.path, suffix))
        assert res.returncode == 0, res.stderr
        return res.stdout.strip() == "yes"

    def cleanup(self):
        self.cluster.ssh("node-1", "rm -rf %s %s.*" % (self.path, self.path))


@pytest.fixture
def lc(cluster):
    """The local cluster (these tests inspect and reconfigure its nodes)."""
    if not getattr(cluster, "supports_faults", False):
        pytest.skip("needs the local sshd cluster (shared /tmp, host keys, ports)")
    return cluster


@pytest.fixture
def marker(lc):
    m = Marker(lc)
    yield m
    m.cleanup()


@pytest.fixture
def pegasus_q(lc, run_pegasus, tmp_path):
    """Run ``pegasus q --ssh-config <cluster config> ...`` in tmp_path."""

    def run(*args, cwd=None, ssh_config=None, timeout=90):
        return run_pegasus(["q", "--ssh-config", ssh_config or lc.ssh_config, *args],
                           cwd or tmp_path, timeout=timeout)

    return run


def setup(folder, hosts, queue):
    os.makedirs(str(folder), exist_ok=True)
    write(os.path.join(str(folder), "hosts.yaml"), hosts)
    write(os.path.join(str(folder), "queue.yaml"), queue)


def ssh_config(cluster, path, hosts):
    """Write an ssh_config: ``hosts`` maps alias -> (node alias, {option: value}).

    Each block connects to the node's address and port with the cluster's
    user and key; the options add to or override those settings.
    """
    blocks = []
    for alias, (node, extra) in hosts.items():
        opts = {
            "HostName": cluster.address(node),
            "Port": cluster.port,
            "User": cluster.user,
            "IdentityFile": cluster.identity_file,
            "IdentitiesOnly": "yes",
            "UserKnownHostsFile": cluster.known_hosts,
            "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "accept-new",
            "HashKnownHosts": "no",
            "BatchMode": "yes",
            "ConnectTimeout": 10,
        }
        opts.update(extra)
        blocks.append("Host %s\n" % alias
                      + "".join("    %s %s\n" % kv for kv in opts.items()))
    write(path, "\n".join(blocks))
    return str(path)


def free_port(ip):
    s = socket.socket()
    s.bind((ip, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def known_hosts_has(path, cluster, alias):
    want = cluster.host_keys[alias].split()
    host = "[%s]:%d" % (cluster.address(alias), cluster.port)
    for line in read(path).splitlines():
        fields = line.split()
        if len(fields) >= 3 and host in fields[0].split(",") and fields[1:3] == want:
            return True
    return False


def assert_nothing_taken(tmp_path, queue_before, res):
    assert read_bytes(tmp_path / "queue.yaml") == queue_before, "queue.yaml was changed"
    assert not (tmp_path / "consumed.yaml").exists(), (
        "consumed.yaml was created:\n" + read(tmp_path / "consumed.yaml"))
    assert not [j for j in jobs_of(res.stdout)], "a job was started:\n" + res.stdout


def logins(cluster, alias):
    """How many logins the node's sshd has accepted so far."""
    return read(cluster.log_path(cluster.host_index(alias))).count("Accepted publickey")


def spawn_pegasus(tmp_path, args):
    """Start pegasus in the background; output goes to files in tmp_path."""
    out = open(str(tmp_path / "pegasus.out"), "wb")
    err = open(str(tmp_path / "pegasus.err"), "wb")
    proc = subprocess.Popen([sys.executable, "-m", "pegasus", *[str(a) for a in args]],
                            cwd=str(tmp_path), stdin=subprocess.DEVNULL, stdout=out,
                            stderr=err)
    out.close()
    err.close()
    return proc


def stop(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


# ---------------------------------------------------------------- 1. the README example

def test_readme_example_runs_each_command_once(pegasus_q, marker, tmp_path):
    commands = [marker.cmd("bs=%d" % bs) for bs in (8, 16, 32, 64)]
    setup(tmp_path, "# hosts.yaml\n- node-1\n- node-2\n",
          "# queue.yaml\n" + "".join("- %s\n" % c for c in commands))

    res = pegasus_q()

    assert res.returncode == 0, res.stdout + res.stderr
    records = marker.records()
    assert sorted(tag for tag, _ in records) == sorted("bs=%d" % b for b in (8, 16, 32, 64))
    assert {node for _, node in records} <= {"node-1", "node-2"}
    jobs = jobs_of(res.stdout)
    assert sorted(j["command"] for j in jobs) == sorted(commands)
    assert all(j["done"] == "exit 0" for j in jobs)
    assert {hostname_of(j["label"]) for j in jobs} <= {"node-1", "node-2"}
    labels, entries = consumed(tmp_path)
    assert entries == [{"command": c} for c in commands]
    assert len(labels) == 4 and set(labels) <= {"[node-1]", "[node-2]"}
    assert queue_entries(tmp_path / "queue.yaml") == []
    assert summary_lines(res.stdout)[-1] == "pegasus: 4 jobs, all succeeded"


# ---------------------------------------------------------------- 2. parametrized hosts

PARAM_HOSTS = """\
- hostname:
    - node-1
    - node-2
  container:
    - gpu0
    - gpu1
"""
FOUR_LABELS = {"[node-1 (container=gpu0)]", "[node-1 (container=gpu1)]",
               "[node-2 (container=gpu0)]", "[node-2 (container=gpu1)]"}


@pytest.mark.slow
def test_parametrized_hosts_and_commands(pegasus_q, marker, tmp_path):
    template = "echo {{ container }} bs={{ bs }} %s >> %s" % (WHERE, marker.path)
    explicit = [template.replace("{{ bs }}", str(bs)) for bs in (8, 16, 32, 64)]

    def check_run(folder):
        res = pegasus_q(cwd=folder)
        assert res.returncode == 0, res.stdout + res.stderr
        jobs = jobs_of(res.stdout)
        # four jobs, four sub-nodes: one job on each
        assert sorted(j["label"] for j in jobs) == sorted(FOUR_LABELS)
        assert all(j["done"] == "exit 0" for j in jobs)
        for j in jobs:
            container = re.search(r"container=(\w+)", j["label"]).group(1)
            assert j["command"].startswith("echo %s bs=" % container), j
        records = marker.records()
        assert len(records) == 4, records
        for tag, node in records:
            container, bs = tag.split()
            label = "[%s (container=%s)]" % (node, container)
            assert label in {j["label"] for j in jobs}
        assert sorted(tag.split()[1] for tag, _ in records) == sorted(
            "bs=%d" % b for b in (8, 16, 32, 64))
        # each sub-node ran exactly one job: (node, container) pairs are distinct
        assert len({(node, tag.split()[0]) for tag, node in records}) == 4
        marker.cleanup()
        return res, sorted(j["command"] for j in jobs)

    a = tmp_path / "explicit"
    setup(a, PARAM_HOSTS, "".join("- %s\n" % c for c in explicit))
    _, rendered_a = check_run(a)
    labels, entries = consumed(a)
    assert entries == [{"command": c} for c in explicit]
    assert sorted(labels) == sorted(FOUR_LABELS)

    b = tmp_path / "parametrized"
    setup(b, PARAM_HOSTS, "- command:\n    - %s\n  bs: [8, 16, 32, 64]\n" % template)
    _, rendered_b = check_run(b)
    # "This results in the exact same jobs with the example above."
    assert rendered_b == rendered_a
    labels, entries = consumed(b)
    assert entries == [{"command": template, "bs": str(bs)} for bs in (8, 16, 32, 64)]
    assert queue_entries(b / "queue.yaml") == []


# ---------------------------------------------------------------- 3. the quiz

QUIZ_HOSTS = """\
- hostname:
    - node-1
    - node-2
  laziness:
    - 1
- hostname:
    - node-3
  laziness:
    - 2
"""
# As in the README, with `sleep 0.0{{ laziness }}` instead of whole seconds.
LOOP = "for i in $(seq {{ low }} {{ high }}); do echo $i; sleep 0.0{{ laziness }}; done"
QUIZ_QUEUE = """\
- echo hi from {{ hostname }}
- command:
    - %s
    - echo bye from {{ hostname }}
  low:
    - 1
    - 2
  high:
    - 3
    - 4
""" % LOOP


def test_quiz_runs_one_plus_two_times_two_times_two(pegasus_q, tmp_path):
    setup(tmp_path, QUIZ_HOSTS, QUIZ_QUEUE)

    res = pegasus_q()

    assert res.returncode == 0, res.stdout + res.stderr
    jobs = jobs_of(res.stdout)
    assert len(jobs) == 1 + 2 * 2 * 2
    laziness = {"node-1": "1", "node-2": "1", "node-3": "2"}
    loops, his, byes = [], [], []
    for j in jobs:
        host = hostname_of(j["label"])
        assert j["label"] == "[%s (laziness=%s)]" % (host, laziness[host])
        assert j["done"] == "exit 0", j
        cmd = j["command"]
        if cmd.startswith("for "):
            m = re.fullmatch(r"for i in \$\(seq (\d) (\d)\); do echo \$i; sleep 0\.0(\d); "
                             r"done", cmd)
            assert m, cmd
            low, high, lazy = m.groups()
            assert lazy == laziness[host]
            # it really ran: the loop printed low..high
            assert j["lines"] == [str(i) for i in range(int(low), int(high) + 1)]
            loops.append((low, high))
        elif cmd.startswith("echo hi"):
            assert cmd == "echo hi from %s" % host
            assert j["lines"] == ["hi from %s" % host]
            his.append(cmd)
        else:
            assert cmd == "echo bye from %s" % host
            assert j["lines"] == ["bye from %s" % host]
            byes.append(cmd)
    assert len(his) == 1 and len(byes) == 4
    assert sorted(loops) == [("1", "3"), ("1", "4"), ("2", "3"), ("2", "4")]

    labels, entries = consumed(tmp_path)
    assert len(entries) == 9 and len(labels) == 9
    assert entries[0] == {"command": "echo hi from {{ hostname }}"}
    want = [{"command": c, "low": lo, "high": hi} for c in (LOOP, "echo bye from {{ hostname }}")
            for lo in ("1", "2") for hi in ("3", "4")]
    def key(entry):
        return sorted(entry.items())

    assert sorted(entries[1:], key=key) == sorted(want, key=key)
    assert queue_entries(tmp_path / "queue.yaml") == []
    assert summary_lines(res.stdout)[-1] == "pegasus: 9 jobs, all succeeded"


# ---------------------------------------------------------------- 4. values as typed

def test_values_reach_the_command_exactly_as_typed(pegasus_q, marker, tmp_path):
    queue = """\
- command: printf 'x=%%s\\n' "{{x}}" >> %(m)s
  x: [no, on, 0x10, '1:30', 1e-3, ~, 1_000, 0o17, +1, NO]
- command: echo --lr={{lr}} >> %(m)s
  lr: 1e-3
- command: printf 'v=%%s\\n' "{{v}}" >> %(m)s
  v: [a&b, "it's", <x>, "a=b", "50%%"]
""" % {"m": marker.path}
    setup(tmp_path, "- node-1\n", queue)

    res = pegasus_q()

    assert res.returncode == 0, res.stdout + res.stderr
    typed_x = ["no", "on", "0x10", "1:30", "1e-3", "~", "1_000", "0o17", "+1", "NO"]
    typed_v = ["a&b", "it's", "<x>", "a=b", "50%"]
    want = (["x=%s" % x for x in typed_x] + ["--lr=1e-3"] + ["v=%s" % v for v in typed_v])
    assert marker.lines() == want  # one sub-node: jobs run in queue order
    commands = [j["command"] for j in jobs_of(res.stdout)]
    assert commands == (
        ["printf 'x=%%s\\n' \"%s\" >> %s" % (x, marker.path) for x in typed_x]
        + ["echo --lr=1e-3 >> %s" % marker.path]
        + ["printf 'v=%%s\\n' \"%s\" >> %s" % (v, marker.path) for v in typed_v])
    assert "&amp;" not in res.stdout and "&#x" not in res.stdout
    # the canonical entries re-run the very same values
    _, entries = consumed(tmp_path)
    assert [e.get("x") for e in entries[:len(typed_x)]] == typed_x
    assert entries[len(typed_x)]["lr"] == "1e-3"
    assert [e.get("v") for e in entries[len(typed_x) + 1:]] == typed_v


# ---------------------------------------------------------------- 5. quoting

QUOTING_QUEUE = r"""- echo 'single $HOME "double"' "double it's \$x" plain\ space
- x='a b'; printf '<%s>\n' $x "$x" '$x' "\$x" ${x%b}
- printf '%s\n' 'back\slash' "two\\\\four" back\\slash 'tab[\t]'
- "echo \"yaml-quoted\" 'single' \\backslash $((1 + 2))"
- 'echo ''yaml single'' "and double" #hash'
- |
  for w in one 'two three'; do
    echo "w=$w"
  done
  cat <<'EOF'
  heredoc $x "q" 'q' \n {a,b}
  EOF
  y="multi
  line"; echo "$y"
  echo last; exit 0
"""


def test_commands_run_exactly_as_written(pegasus_q, tmp_path):
    commands = yaml.safe_load(QUOTING_QUEUE)
    assert all(isinstance(c, str) for c in commands) and len(commands) == 6
    setup(tmp_path, "- node-1\n", QUOTING_QUEUE)

    res = pegasus_q()

    assert res.returncode == 0, res.stdout + res.stderr
    jobs = jobs_of(res.stdout)
    assert len(jobs) == len(commands)
    for cmd, job in zip(commands, jobs):  # one sub-node: queue order
        local = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True,
                               env={"PATH": os.environ["PATH"], "HOME": "/nonexistent"})
        assert local.returncode == 0, (cmd, local.stderr)
        assert job["lines"] == local.stdout.splitlines(), cmd
        assert job["done"] == "exit 0"
        if "\n" not in cmd:
            assert job["command"] == cmd
    _, entries = consumed(tmp_path)
    assert entries == [{"command": c} for c in commands]


# ---------------------------------------------------------------- 6. streaming

def test_carriage_returns_stderr_and_long_lines(pegasus_q, tmp_path):
    n = 43000  # the digits of 1..43000: about 200 KB, no newline
    long_line = "".join(str(i) for i in range(1, n + 1))
    assert len(long_line) > 200_000
    setup(tmp_path, "- node-1\n",
          "- printf 'a\\rb\\rc\\n'\n"
          "- echo to-stdout; echo to-stderr >&2\n"
          "- printf 'x\\r\\ny\\n'\n"
          "- seq 1 %d | tr -d '\\n'\n" % n)

    res = pegasus_q()

    assert res.returncode == 0, res.stdout + res.stderr
    jobs = jobs_of(res.stdout)
    # \r updates: the first at once, the next within 2 s held back, the final state
    assert jobs[0]["lines"] == ["a", "c"]
    # both streams, each line with the prefix (their relative order is not defined)
    assert sorted(jobs[1]["lines"]) == ["to-stderr", "to-stdout"]
    assert jobs[2]["lines"] == ["x", "y"]  # \r\n ends one line
    assert "".join(jobs[3]["lines"]) == long_line
    assert all(j["done"] == "exit 0" for j in jobs)


def test_print_period_zero_prints_frames_and_summary_only(pegasus_q, tmp_path):
    setup(tmp_path, "- node-1\n", "- seq 1 5\n- echo secret-err >&2\n")

    res = pegasus_q("-p", "0")

    assert res.returncode == 0, res.stdout + res.stderr
    jobs = jobs_of(res.stdout)
    assert [j["command"] for j in jobs] == ["seq 1 5", "echo secret-err >&2"]
    assert [j["lines"] for j in jobs] == [[], []]
    assert all(j["done"] == "exit 0" for j in jobs)
    assert "secret-err" not in res.stdout.replace("'echo secret-err >&2'", "")
    assert "secret-err" not in res.stderr
    assert summary_lines(res.stdout)[-1] == "pegasus: 2 jobs, all succeeded"


def test_print_period_two_prints_every_second_line(pegasus_q, tmp_path):
    setup(tmp_path, "- node-1\n", "- seq 1 10\n")

    res = pegasus_q("-p", "2")

    assert res.returncode == 0, res.stdout + res.stderr
    (job,) = jobs_of(res.stdout)
    assert job["lines"] in (["1", "3", "5", "7", "9"], ["2", "4", "6", "8", "10"])
    assert job["done"] == "exit 0"


# ---------------------------------------------------------------- 7. many sub-nodes, one host

def test_sixteen_sub_nodes_on_one_default_sshd(pegasus_q, marker, tmp_path):
    hosts = "- hostname: node-1\n  slot: [%s]\n" % ", ".join(str(i) for i in range(16))
    setup(tmp_path, hosts, "".join("- %s\n" % marker.cmd("job-%d" % i) for i in range(48)))

    res = pegasus_q()

    assert res.returncode == 0, res.stdout + res.stderr
    records = marker.records()
    assert sorted(tag for tag, _ in records) == sorted("job-%d" % i for i in range(48))
    assert {node for _, node in records} == {"node-1"}
    jobs = jobs_of(res.stdout)
    assert len(jobs) == 48 and all(j["done"] == "exit 0" for j in jobs)
    assert {j["label"] for j in jobs} <= {"[node-1 (slot=%d)]" % i for i in range(16)}
    assert len(consumed(tmp_path)[1]) == 48
    assert summary_lines(res.stdout)[-1] == "pegasus: 48 jobs, all succeeded"


# ---------------------------------------------------------------- 8. failures

def test_failed_job_is_listed_and_others_still_run(pegasus_q, marker, tmp_path):
    setup(tmp_path, "- node-1\n",
          "- %s\n- exit 3\n- %s\n" % (marker.cmd("before"), marker.cmd("after")))

    res = pegasus_q()

    assert res.returncode == 1, res.stdout + res.stderr
    assert marker.records() == [("before", "node-1"), ("after", "node-1")]
    summary = summary_lines(res.stdout)
    assert "pegasus: 3 jobs, 1 failed:" in summary
    failed = [line for line in summary if "'exit 3'" in line]
    assert len(failed) == 1 and "[node-1]" in failed[0] and "(exit 3)" in failed[0]
    assert not any("'%s'" % marker.cmd("after") in line for line in summary)
    assert len(consumed(tmp_path)[1]) == 3


# ---------------------------------------------------------------- 9. bad input

# (id, hosts.yaml, queue.yaml, words the message must contain); %(ok)s is a
# valid entry before the bad one: it must not run either.
BAD_INPUT = [
    ("yaml-syntax", "- node-1\n", "- %(ok)s\n- a: b: c\n", ["queue.yaml:2"]),
    ("no-command", "- node-1\n", "- %(ok)s\n- bs: [1, 2]\n",
     ["queue.yaml:2", "entry 2", "command"]),
    ("duplicate-key", "- node-1\n", "- %(ok)s\n- command: echo {{x}}\n  x: 1\n  x: 2\n",
     ["queue.yaml:", "duplicate", "'x'"]),
    ("python-tag", "- node-1\n",
     "- %(ok)s\n- !!python/object/apply:os.system ['touch %(local)s']\n",
     ["queue.yaml:2", "python/object"]),
    ("undefined-name", "- node-1\n", "- %(ok)s\n- rm -rf %(victim)s/data/{{dir}}\n",
     ["queue.yaml:2", "entry 2", "dir"]),
    ("unclosed", "- node-1\n", "- %(ok)s\n- echo {{ x\n", ["queue.yaml:2", "{{"]),
    ("unknown-helper", "- node-1\n", "- %(ok)s\n- command: echo {{frobnicate x}}\n  x: 1\n",
     ["queue.yaml:2", "frobnicate"]),
    ("missing-hosts", None, "- %(ok)s\n", ["hosts.yaml", "not found"]),
    ("host-without-hostname", "- node-1\n- container: [gpu0, gpu1]\n", "- %(ok)s\n",
     ["hosts.yaml:2", "entry 2", "hostname"]),
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_takes_nothing(case, pegasus_q, marker, lc, tmp_path):
    name, hosts, queue, words = case
    local_flag = str(tmp_path / "python-tag-ran")
    victim = marker.path + ".victim"
    assert lc.ssh("node-1", "mkdir -p %s/data && touch %s/data/keep" % (victim, victim)
                  ).returncode == 0
    queue = queue % {"ok": marker.cmd("ran"), "local": local_flag, "victim": victim}
    write(tmp_path / "queue.yaml", queue)
    if hosts is not None:
        write(tmp_path / "hosts.yaml", hosts)
    before = read_bytes(tmp_path / "queue.yaml")

    res = pegasus_q()

    assert res.returncode == 2, res.stdout + res.stderr
    for word in words:
        assert word in res.stderr, "%r not in the message:\n%s" % (word, res.stderr)
    assert_nothing_taken(tmp_path, before, res)
    assert not marker.exists(), "a job ran"
    assert marker.exists(".victim/data/keep"), "rm -rf ran"
    assert not os.path.exists(local_flag), "the YAML tag was executed"


# ---------------------------------------------------------------- 10. unreachable hosts

@pytest.mark.slow
def test_unreachable_host_at_start_is_skipped_with_a_warning(pegasus_q, marker, lc,
                                                             tmp_path):
    dead_port = free_port(lc.address("node-2"))
    config = ssh_config(lc, tmp_path / "ssh_config", {
        "node-1": ("node-1", {}),
        "node-dead": ("node-2", {"Port": dead_port, "ConnectTimeout": 5}),
    })
    setup(tmp_path, "- node-1\n- node-dead\n",
          "- %s\n- %s\n" % (marker.cmd("a"), marker.cmd("b")))

    res = pegasus_q(ssh_config=config)

    assert res.returncode == 0, res.stdout + res.stderr
    assert "host node-dead: cannot connect" in res.stdout
    assert "connection refused" in res.stdout
    assert sorted(marker.records()) == [("a", "node-1"), ("b", "node-1")]


@pytest.mark.slow
def test_no_reachable_host_at_start_takes_nothing(pegasus_q, marker, lc, tmp_path):
    dead_port = free_port(lc.address("node-2"))
    config = ssh_config(lc, tmp_path / "ssh_config", {
        "node-1": ("node-1", {}),
        "node-dead": ("node-2", {"Port": dead_port, "ConnectTimeout": 5}),
    })
    setup(tmp_path, "- node-dead\n", "- %s\n- %s\n" % (marker.cmd("a"), marker.cmd("b")))
    before = read_bytes(tmp_path / "queue.yaml")

    res = pegasus_q(ssh_config=config)

    assert res.returncode == 3, res.stdout + res.stderr
    assert "node-dead" in res.stderr
    assert "node-1:" not in res.stderr  # only the host at fault is blamed
    assert_nothing_taken(tmp_path, before, res)
    assert not marker.exists()


def test_authentication_failure(pegasus_q, marker, lc, tmp_path):
    wrong_key = str(tmp_path / "wrong_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", wrong_key],
                   check=True, stdin=subprocess.DEVNULL)
    config = ssh_config(lc, tmp_path / "ssh_config", {
        "node-1": ("node-1", {}),
        "node-badkey": ("node-2", {"IdentityFile": wrong_key,
                                   "UserKnownHostsFile": str(tmp_path / "known_hosts")}),
    })
    setup(tmp_path, "- node-badkey\n",
          "- %s\n- %s\n" % (marker.cmd("a"), marker.cmd("b")))
    before = read_bytes(tmp_path / "queue.yaml")

    res = pegasus_q(ssh_config=config)

    assert res.returncode == 3, res.stdout + res.stderr
    assert "node-badkey" in res.stderr
    assert "auth" in res.stderr.lower()
    assert_nothing_taken(tmp_path, before, res)
    assert not marker.exists()


# ---------------------------------------------------------------- 11. host keys

def test_unknown_host_key_is_learned_with_accept_new(pegasus_q, marker, lc, tmp_path):
    known = tmp_path / "known_hosts"
    write(known, "")
    config = ssh_config(lc, tmp_path / "ssh_config",
                        {"node-1": ("node-1", {"UserKnownHostsFile": str(known)})})
    setup(tmp_path, "- node-1\n", "- %s\n" % marker.cmd("learned"))

    res = pegasus_q(ssh_config=config)

    assert res.returncode == 0, res.stdout + res.stderr
    assert marker.records() == [("learned", "node-1")]
    assert known_hosts_has(known, lc, "node-1"), read(known)


def test_changed_host_key_is_refused_before_anything_runs(pegasus_q, marker, lc, tmp_path):
    known = tmp_path / "known_hosts"
    # node-1's address, but another node's key: what a man in the middle looks like
    wrong = "[%s]:%d %s\n" % (lc.address("node-1"), lc.port, lc.host_keys["node-2"])
    write(known, wrong)
    config = ssh_config(lc, tmp_path / "ssh_config", {
        "node-1": ("node-1", {"UserKnownHostsFile": str(known)}),
        "node-3": ("node-3", {"UserKnownHostsFile": str(known)}),
    })
    setup(tmp_path, "- node-3\n- node-1\n",
          "- %s\n- %s\n" % (marker.cmd("a"), marker.cmd("b")))
    before = read_bytes(tmp_path / "queue.yaml")

    res = pegasus_q(ssh_config=config)

    assert res.returncode == 3, res.stdout + res.stderr
    assert "node-1" in res.stderr
    assert "changed" in res.stderr.lower()
    assert_nothing_taken(tmp_path, before, res)
    assert not marker.exists()
    assert read(known).splitlines()[0] == wrong.strip()  # the old key is not replaced
    assert not known_hosts_has(known, lc, "node-1")


def test_strict_host_key_checking_refuses_unknown_host(pegasus_q, marker, lc, tmp_path):
    known = tmp_path / "known_hosts"
    write(known, "")
    config = ssh_config(lc, tmp_path / "ssh_config", {
        "node-1": ("node-1", {"UserKnownHostsFile": str(known),
                              "StrictHostKeyChecking": "yes"})})
    setup(tmp_path, "- node-1\n", "- %s\n" % marker.cmd("a"))
    before = read_bytes(tmp_path / "queue.yaml")

    res = pegasus_q(ssh_config=config)

    assert res.returncode == 3, res.stdout + res.stderr
    assert "node-1" in res.stderr
    assert_nothing_taken(tmp_path, before, res)
    assert not marker.exists()
    assert read(known) == ""


# ---------------------------------------------------------------- 12. ssh_config features

def test_proxy_command_is_refused(pegasus_q, marker, lc, tmp_path):
    config = ssh_config(lc, tmp_path / "ssh_config", {
        "node-1": ("node-1", {}),
        "node-pc": ("node-2", {"ProxyCommand": "nc %h %p"}),
    })
    setup(tmp_path, "- node-1\n- node-pc\n", "- %s\n" % marker.cmd("a"))
    before = read_bytes(tmp_path / "queue.yaml")

    res = pegasus_q(ssh_config=config)

    assert res.returncode == 2, res.stdout + res.stderr
    assert "node-pc" in res.stderr and "ProxyCommand" in res.stderr
    assert_nothing_taken(tmp_path, before, res)
    assert not marker.exists()


def test_proxy_jump_through_one_bastion(pegasus_q, marker, lc, tmp_path):
    known = str(tmp_path / "known_hosts")
    config = ssh_config(lc, tmp_path / "ssh_config", {
        "node-1-via-2": ("node-1", {"ProxyJump": "node-2", "UserKnownHostsFile": known}),
        "node-2": ("node-2", {"UserKnownHostsFile": known}),
    })
    setup(tmp_path, "- node-1-via-2\n", "- %s\n" % marker.cmd("jumped"))
    logins_before = logins(lc, "node-2")

    res = pegasus_q(ssh_config=config)

    assert res.returncode == 0, res.stdout + res.stderr
    assert marker.records() == [("jumped", "node-1")]
    assert [j["label"] for j in jobs_of(res.stdout)] == ["[node-1-via-2]"]
    # the connection went through the bastion: node-2 saw a login
    assert logins(lc, "node-2") > logins_before


# ---------------------------------------------------------------- 13. daemon mode

def test_daemon_runs_entries_added_later_and_stops_on_ctrl_c(lc, marker, tmp_path):
    setup(tmp_path, "- node-1\n", "")
    proc = spawn_pegasus(tmp_path, ["q", "-d", "--ssh-config", lc.ssh_config])
    try:
        # an empty queue does not end a daemon
        write_atomic(tmp_path / "queue.yaml", "- %s\n" % marker.cmd("late"))
        wait_for(lambda: (tmp_path / "consumed.yaml").exists()
                 and len(consumed(tmp_path)[1]) == 1, what="the entry to be taken")
        wait_for(lambda: marker.records() == [("late", "node-1")], what="the job to run")
        assert proc.poll() is None, "the daemon exited:\n" + read(tmp_path / "pegasus.out")
        assert queue_entries(tmp_path / "queue.yaml") == []

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        stop(proc)
    out = read(tmp_path / "pegasus.out")
    assert [j["done"] for j in jobs_of(out)] == ["exit 0"]


@pytest.mark.slow
def test_daemon_reports_bad_head_entry_once_and_runs_it_when_fixed(lc, marker, tmp_path):
    setup(tmp_path, "- node-1\n", "")
    bad = "- echo {{ nope }} >> %s\n" % marker.path
    lock = tmp_path / ".queue.yaml.lock"
    logins_before = logins(lc, "node-1")
    proc = spawn_pegasus(tmp_path, ["q", "-d", "--ssh-config", lc.ssh_config])

    def said():
        return read(tmp_path / "pegasus.out") + read(tmp_path / "pegasus.err")

    try:
        # The queue is checked before Pegasus connects: once node-1 saw the
        # login, the daemon is past its start and polling the queue.
        wait_for(lambda: logins(lc, "node-1") > logins_before or proc.poll() is not None,
                 what="the daemon to connect")
        write_atomic(tmp_path / "queue.yaml", bad)
        wait_for(lambda: "nope" in said(), what="the bad entry to be reported")
        # Make Pegasus look at the (still bad) file again, several times: each
        # time it takes the queue lock, it recreates the lock file we removed.
        for _ in range(3):
            if lock.exists():
                os.unlink(str(lock))
            write_atomic(tmp_path / "queue.yaml", bad)
            wait_for(lock.exists, what="Pegasus to read the queue again")
        assert proc.poll() is None, "the daemon exited:\n" + said()
        assert not (tmp_path / "consumed.yaml").exists()
        assert not marker.exists()

        write_atomic(tmp_path / "queue.yaml", "- %s\n" % marker.cmd("fixed"))
        wait_for(lambda: marker.records() == [("fixed", "node-1")], what="the fixed job to run")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        stop(proc)
    text = said()
    reports = [line for line in text.splitlines() if "'nope'" in line]
    assert len(reports) == 1, "the bad entry was reported %d times:\n%s" % (len(reports), text)
    assert "queue.yaml" in reports[0]
    _, entries = consumed(tmp_path)
    assert entries == [{"command": marker.cmd("fixed")}]


# ---------------------------------------------------------------- 14. Ctrl-c

def test_ctrl_c_lets_running_jobs_finish_and_keeps_the_rest_queued(lc, marker, tmp_path):
    flag = marker.path + ".go"
    # Each job waits until the test lets it finish, then says done-N.
    job = "while [ ! -e %s ]; do sleep 0.05; done; echo done-%d"
    queue = "".join("- %s\n" % (job % (flag, n)) for n in range(1, 7))
    setup(tmp_path, "- hostname: node-1\n  slot: [0, 1]\n", queue)
    proc = spawn_pegasus(tmp_path, ["q", "--ssh-config", lc.ssh_config])
    out = tmp_path / "pegasus.out"
    try:
        started = wait_for(lambda: len(jobs_of(read(out))) == 2 and jobs_of(read(out)),
                           what="the first two jobs to start")
        queue_at_signal = read_bytes(tmp_path / "queue.yaml")
        proc.send_signal(signal.SIGINT)
        # Give Pegasus the chance to notice before the jobs can finish; a
        # message is not required, so this only waits a little if none comes.
        try:
            wait_for(lambda: "pegasus:" in read(out) + read(tmp_path / "pegasus.err"),
                     timeout=5, what="Pegasus to acknowledge Ctrl-c")
        except AssertionError:
            pass
        assert lc.ssh("node-1", "touch %s" % flag).returncode == 0
        status = proc.wait(timeout=60)
    finally:
        stop(proc)
    text = read(out)
    assert status == 130, text + read(tmp_path / "pegasus.err")
    jobs = jobs_of(text)
    assert len(jobs) == 2, "new jobs started after Ctrl-c:\n" + text
    for j in started:
        n = int(j["command"].rsplit("done-", 1)[1])
        assert n in (1, 2)
    for j in jobs:  # the running jobs ran to completion
        n = j["command"].rsplit("done-", 1)[1]
        assert j["lines"] == ["done-" + n] and j["done"] == "exit 0", text
    assert read_bytes(tmp_path / "queue.yaml") == queue_at_signal
    assert queue_entries(tmp_path / "queue.yaml") == [job % (flag, n) for n in range(3, 7)]
    assert consumed(tmp_path)[1] == [{"command": job % (flag, n)} for n in (1, 2)]


# ---------------------------------------------------------------- 15. localhost

def test_localhost_runs_locally_without_ssh(run_pegasus, tmp_path):
    import pwd

    out = tmp_path / "ran-here"
    setup(tmp_path, "- localhost\n",
          '- echo "ssh=${SSH_CONNECTION:-none} user=$(id -un)" >> %s\n- echo hello\n' % out)

    res = run_pegasus(["q"], tmp_path, env={"SSH_CONNECTION": None})

    assert res.returncode == 0, res.stdout + res.stderr
    me = pwd.getpwuid(os.getuid()).pw_name
    assert read(out).splitlines() == ["ssh=none user=%s" % me]
    jobs = jobs_of(res.stdout)
    assert [j["label"] for j in jobs] == ["[localhost]", "[localhost]"]
    assert jobs[1]["lines"] == ["hello"]
    assert len(consumed(tmp_path)[1]) == 2
