"""Start-up (issue 16): what a command imports is what it needs.

``pegasus --version`` and a run on localhost alone load neither parallel-ssh and
ssh2-python nor Pegasus's SSH and Slurm modules: each is milliseconds a start.
Checked in a fresh interpreter that runs the real ``cli.run`` and prints, as it
exits, the modules it loaded. A run over SSH starts no ``git`` either
(parallel-ssh's versioneer asked it six times at every start).
"""

import json
import os
import subprocess
import sys

# The real entry point; as the process exits, the loaded modules to the file named last.
_PROBE = """
import atexit, json, sys
out = sys.argv.pop()
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "pegasus"
from pegasus import cli
cli.run()
"""

SSH_ONLY = ("pssh", "ssh2", "pegasus.ssh", "pegasus.sshclient", "pegasus.knownhosts",
            "pegasus.wrapper", "pegasus.slurm")


def loaded(args, cwd):
    """(exit status, stdout, the modules the run loaded)."""
    seen = cwd / "modules.json"
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args, str(seen)], cwd=str(cwd),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=60)
    return proc.returncode, proc.stdout, json.loads(seen.read_text())


def of(modules, names):
    """The modules of these packages (or these modules) among ``modules``."""
    return [m for m in modules if any(m == n or m.startswith(n + ".") for n in names)]


def test_version_loads_no_ssh_gevent_or_yaml(tmp_path):
    status, out, modules = loaded(["--version"], tmp_path)
    assert (status, out.startswith("pegasus ")) == (0, True), out
    assert modules, "the probe saw no modules"
    assert of(modules, SSH_ONLY + ("gevent", "yaml", "pybars", "docopt")) == []


def test_a_localhost_run_loads_no_ssh_modules(tmp_path):
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    (tmp_path / "queue.yaml").write_text("- echo hi\n- command: echo {{ x }}\n  x: [1, 2]\n")
    status, out, modules = loaded(["q"], tmp_path)
    assert status == 0, out
    assert "[localhost] hi\n" in out and "[localhost] 2\n" in out, out
    assert "pegasus.local" in modules  # the probe saw the run
    assert of(modules, SSH_ONLY + ("pybars",)) == []  # names-only templates need no pybars


def test_ssh_modules_start_no_git(tmp_path):
    """parallel-ssh's own version was asked of ``git`` at import: six processes,
    ~25 ms of CPU a start inside a git work tree. A ``git`` on PATH that notes
    every call sees none."""
    (tmp_path / "bin").mkdir()
    calls, git = tmp_path / "git-calls", tmp_path / "bin" / "git"
    git.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    git.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, "-c", "import pegasus.ssh"], cwd=str(tmp_path),
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout
    assert not calls.exists(), calls.read_text()
