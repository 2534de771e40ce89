"""The README's quick start, run exactly as written by a new user on Debian.

The first command of README.md's "Quick start" block is read from the README
(not copied here) and run with ``bash -c`` in a fresh ``git clone`` of this
repository's HEAD (commit first: uncommitted changes are not in the clone),
as an unprivileged user (``nobody``) with an empty HOME and
``PATH=/usr/bin:/bin``, so ``python3`` is Debian's ``/usr/bin/python3``.

"stock": a mount namespace hides Debian's pip and ``ensurepip``
(python3-pip and python3-venv are not installed on a fresh Debian 12 or
Ubuntu 24.04, and ``pip install`` is refused there by PEP 668); the command
is run twice (the second run updates the install in place). "python3-venv":
Debian's Python as this machine has it, when it has ``ensurepip``.

Needs root (to become ``nobody`` and to hide files in a mount namespace),
Debian's ``/usr/bin/python3`` and PyPI; it takes a minute or two.
"""

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"
JOB_LINES = [f"done bs={bs}" for bs in (8, 16, 32, 64)]
SUMMARY = "pegasus: 4 jobs, all succeeded"


def quick_start_commands(readme: str) -> list:
    """The commands of the first console block under "## Quick start"."""
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```console\n(.*?)```", section, re.S).group(1)
    return [line[2:] for line in block.splitlines() if line.startswith("$ ")]


def test_the_quick_start_block_is_two_commands():
    commands = quick_start_commands((REPO / "README.md").read_text())
    assert len(commands) == 2 and commands[1] == "bash .ci/run", commands
    assert "examples/quickstart/" in commands[0] and "pegasus q" in commands[0]


def skip_unless_possible(variant: str) -> None:
    if not os.path.exists(PYTHON):
        pytest.skip(f"needs Debian's {PYTHON}")
    if os.geteuid() != 0:
        pytest.skip("needs root: to run as a fresh unprivileged user and to hide pip "
                    "and ensurepip in a mount namespace")
    for tool in ("unshare", "setpriv", "git"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    if variant == "python3-venv" and not os.path.exists(f"{stdlib()}/ensurepip/__main__.py"):
        pytest.skip(f"{PYTHON} has no ensurepip here (python3-venv is not installed)")
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=20).close()
    except OSError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PyPI cannot be reached: {err}")
        pytest.skip(f"needs PyPI, which cannot be reached: {err}")


def stdlib() -> str:
    return subprocess.check_output(
        [PYTHON, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
        text=True).strip()


def hidden_paths() -> list:
    """What python3-pip, python3-pip-whl and python3-venv add to Debian's Python."""
    candidates = [f"{stdlib()}/ensurepip", "/usr/lib/python3/dist-packages/pip",
                  "/usr/share/python-wheels"]
    return [p for p in candidates if os.path.isdir(p)]


@pytest.fixture
def user_home():
    """A scratch folder readable by everyone, with HOME/pegasus: a fresh clone."""
    work = tempfile.mkdtemp(prefix="pegasus-quickstart-")
    os.chmod(work, 0o755)
    home = Path(work) / "home"
    home.mkdir()
    clone = home / "pegasus"
    head = subprocess.check_output(["git", "-C", str(REPO), "rev-parse", "HEAD"],
                                   text=True).strip()
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(REPO), str(clone)],
                   check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", head], check=True)
    nobody = pwd.getpwnam("nobody")
    for path in [home, *home.rglob("*")]:
        os.lchown(path, nobody.pw_uid, nobody.pw_gid)
    try:
        yield home
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_as_new_user(home: Path, command: str, hide: list) -> subprocess.CompletedProcess:
    """``command`` by ``bash -c`` as nobody in HOME/pegasus, with ``hide`` hidden."""
    nobody = pwd.getpwnam("nobody")
    empty = home.parent / "empty"
    empty.mkdir(exist_ok=True)
    mounts = "".join(f"mount --bind {empty} {p} && " for p in hide)
    drop = (f"setpriv --reuid={nobody.pw_uid} --regid={nobody.pw_gid} --clear-groups "
            f"env -i HOME={home} USER=nobody LOGNAME=nobody LANG=C.UTF-8 PATH=/usr/bin:/bin")
    script = (f"mount --make-rprivate / && {mounts}cd {home}/pegasus && "
              f'exec {drop} bash -c "$0"')
    return subprocess.run(["unshare", "--mount", "sh", "-c", script, command],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900)


def assert_quick_start_ran(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 0, res.stdout
    for line in JOB_LINES:
        assert f"] {line}" in res.stdout, res.stdout
    assert SUMMARY in res.stdout, res.stdout
    folder = res.stdout.rstrip("\n").rpartition("\n")[2].partition("records and logs: ")[2]
    assert folder and os.path.isfile(os.path.join(folder, "consumed.yaml")), res.stdout


@pytest.mark.slow
@pytest.mark.sshd  # root: runs as nobody in a mount namespace (the sshd tier is the root tier)
@pytest.mark.parametrize("variant", ["stock", "python3-venv"])
def test_the_readme_quick_start_runs_as_written(user_home, variant):
    skip_unless_possible(variant)
    command = quick_start_commands((REPO / "README.md").read_text())[0]
    hide = hidden_paths() if variant == "stock" else []
    if variant == "stock":  # the set-up really is Debian's stock Python
        probe = run_as_new_user(user_home, "command -v python3; python3 -m pip --version; "
                                "python3 -c 'import ensurepip.__main__'", hide)
        assert probe.stdout.startswith(f"{PYTHON}\n"), probe.stdout
        assert "No module named pip" in probe.stdout and "ensurepip" in probe.stdout

    start = time.monotonic()
    first = run_as_new_user(user_home, command, hide)
    took = time.monotonic() - start
    assert_quick_start_ran(first)
    assert (user_home / ".local" / "bin" / "pegasus").is_symlink()
    bootstrapped = "bootstrapping pip from its wheel" in first.stdout
    assert bootstrapped == (variant == "stock"), first.stdout
    sys.stderr.write(f"\nquick start ({variant}): {took:.0f} s\n")
    if variant != "stock":
        return
    start = time.monotonic()
    again = run_as_new_user(user_home, command, hide)
    sys.stderr.write(f"quick start again ({variant}): {time.monotonic() - start:.0f} s\n")
    assert_quick_start_ran(again)
    assert "creating" not in again.stdout  # the environment was updated, not made anew
    status = subprocess.run(["git", "-c", "safe.directory=*", "-C",
                             str(user_home / "pegasus"), "status", "--porcelain"],
                            capture_output=True, text=True, check=True)
    assert status.stdout == "", status.stdout  # the clone is left clean
