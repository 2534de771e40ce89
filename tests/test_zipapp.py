"""pegasus.pyz: built by build_zipapp.py, run by a bare interpreter against real sshd nodes.

The zipapp is built once per session from the working tree (pip fetches the
dependencies, so this needs PyPI or a warm pip cache) and copied to a
temporary folder.  It is run by the python of a fresh ``venv --without-pip``:
none of Pegasus's dependencies can be imported there, so everything comes
from the .pyz.  shiv extracts the .pyz into SHIV_ROOT, a temporary folder.
"""
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # build_zipapp
IN_CI = os.environ.get("CI", "").lower() == "true"
BUILD_TIMEOUT = 600

pytestmark = pytest.mark.slow  # every test needs the .pyz, built once (pip, shiv): 10 s or more


def _unavailable(reason):
    if IN_CI:
        pytest.fail("CI=true but %s" % reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def built_pyz(tmp_path_factory):
    """dist/pegasus.pyz as build_zipapp.py makes it, built into a temporary folder."""
    try:
        import shiv  # noqa: F401
    except ImportError:
        _unavailable("shiv is not installed (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("build") / "pegasus.pyz"
    res = subprocess.run([sys.executable, str(ROOT / "build_zipapp.py"), "--output", str(out)],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=BUILD_TIMEOUT)
    assert res.returncode == 0, "build_zipapp.py failed:\n" + res.stdout + res.stderr
    return out


@pytest.fixture(scope="session")
def zipapp_dir(built_pyz, tmp_path_factory):
    """A folder holding only a copy of pegasus.pyz, a bare venv and a SHIV_ROOT."""
    folder = tmp_path_factory.mktemp("zipapp")
    shutil.copy2(built_pyz, folder / "pegasus.pyz")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder / "bare")],
                   check=True, stdin=subprocess.DEVNULL, timeout=120)
    (folder / "shiv-root").mkdir()
    return folder


@pytest.fixture
def bare(zipapp_dir):
    """``bare(args, cwd, direct=False)``: run the .pyz with the bare venv's python.

    With ``direct`` the .pyz runs as a program (``./pegasus.pyz``): its
    ``/usr/bin/env python3`` shebang finds the bare venv first on PATH.
    """
    python = zipapp_dir / "bare" / "bin" / "python"
    pyz = zipapp_dir / "pegasus.pyz"

    def run(args, cwd, direct=False, timeout=120):
        env = {k: v for k, v in os.environ.items()  # as it is now (a test may set HOME)
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
        env.update(SHIV_ROOT=str(zipapp_dir / "shiv-root"), NO_COLOR="1",
                   PATH=str(python.parent) + os.pathsep + env.get("PATH", ""))
        cmd = [str(pyz)] if direct else [str(python), str(pyz)]
        return subprocess.run(cmd + [str(a) for a in args], cwd=str(cwd), env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)

    run.python = python
    return run


def entries(path):
    """The entries of a YAML list file (an empty or comment-only file has none)."""
    return yaml.safe_load(Path(path).read_text()) or []


def remote_markers(cluster, folder):
    """{file name: content} of the marker files in ``folder`` on every node."""
    found = {}
    for alias in cluster.aliases:
        res = cluster.ssh(alias, "cd %s 2>/dev/null && grep -H . * || true" % folder)
        for line in res.stdout.splitlines():
            name, _, content = line.partition(":")
            found[name] = content
    return found


@pytest.fixture
def remote_dir(cluster):
    """A fresh folder name under /tmp on the nodes, removed afterwards."""
    folder = "/tmp/pegasus-pyz-%s" % uuid.uuid4().hex[:12]
    yield folder
    for alias in cluster.aliases:
        cluster.ssh(alias, "rm -rf %s" % folder)


# ---------------------------------------------------------------- tests

def test_pyz_is_an_executable_with_env_python3_shebang(built_pyz):
    with open(built_pyz, "rb") as f:
        assert f.readline() == b"#!/usr/bin/env python3\n"
    assert os.access(built_pyz, os.X_OK)


def test_bare_interpreter_has_none_of_the_dependencies(bare, tmp_path):
    for module in ("pegasus", "gevent", "pssh", "yaml", "pybars", "docopt"):
        res = subprocess.run([str(bare.python), "-c", "import " + module], cwd=str(tmp_path),
                             stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        assert res.returncode != 0, "%s is importable in the bare venv" % module


def test_version_from_bare_interpreter(bare, tmp_path):
    from pegasus import __version__

    for direct in (False, True):
        res = bare(["--version"], cwd=tmp_path, direct=direct)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "pegasus %s" % __version__


def test_the_pyz_unpacks_only_into_its_shiv_root(bare, zipapp_dir, tmp_path, monkeypatch):
    """Issue 10 §7: a test suite that filled ~/.shiv; here HOME stays empty."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    res = bare(["--version"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert list(home.iterdir()) == []
    assert any((zipapp_dir / "shiv-root").iterdir())


def test_queue_mode_against_cluster(bare, cluster, remote_dir, tmp_path):
    """``python pegasus.pyz q`` runs every job once on the cluster's nodes."""
    jobs = 8
    (tmp_path / "hosts.yaml").write_text("".join("- %s\n" % a for a in cluster.aliases))
    (tmp_path / "queue.yaml").write_text(
        "- command: mkdir -p %s && echo {{ hostname }} > %s/job-{{ i }} && echo ran {{ i }}\n"
        "  i: [%s]\n" % (remote_dir, remote_dir, ", ".join(str(i) for i in range(jobs))))
    res = bare(["q", "--ssh-config", cluster.ssh_config], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert entries(tmp_path / "queue.yaml") == []
    assert len(entries(tmp_path / "consumed.yaml")) == jobs
    markers = remote_markers(cluster, remote_dir)
    assert sorted(markers) == sorted("job-%d" % i for i in range(jobs))
    assert set(markers.values()) <= set(cluster.aliases)
    for i in range(jobs):
        assert sum(line.endswith("] ran %d" % i) for line in res.stdout.splitlines()) == 1


def test_broadcast_mode_against_cluster(bare, cluster, remote_dir, tmp_path):
    """``./pegasus.pyz b -e`` runs each step on every node."""
    (tmp_path / "hosts.yaml").write_text("".join("- %s\n" % a for a in cluster.aliases))
    (tmp_path / "queue.yaml").write_text(
        "- mkdir -p %s\n- echo step2 > %s/{{ hostname }}\n" % (remote_dir, remote_dir))
    res = bare(["b", "-e", "--ssh-config", cluster.ssh_config], cwd=tmp_path, direct=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert entries(tmp_path / "queue.yaml") == []
    markers = remote_markers(cluster, remote_dir)
    assert markers == {alias: "step2" for alias in cluster.aliases}


# ---------------------------------------------------------------- the pip that builds

def _fake_target(folder, pip_error):
    """An interpreter that is this python for build_zipapp's probe (naming itself
    as the target) and fails as an old pip does when pip's --python runs pip in it."""
    path = folder / "python3.99"
    path.write_text(f"""#!{sys.executable}
import contextlib, io, json, sys
if sys.argv[1].endswith("__pip-runner__.py"):
    sys.exit("Traceback (most recent call last):\\n" + {pip_error!r})
out = io.StringIO()
with contextlib.redirect_stdout(out):
    exec(sys.argv[2])
print(json.dumps(dict(json.loads(out.getvalue()), executable={str(path)!r})))
""")
    path.chmod(0o755)
    return path


def test_a_pip_that_cannot_run_under_the_target_is_named_before_anything_is_fetched(
        tmp_path, capsys):
    """Debian 12's pip 23.0 with --python python3.12: pip runs its own code under the
    target, and that pip's vendored pkg_resources needs pkgutil.ImpImporter."""
    import build_zipapp
    import pip

    error = "AttributeError: module 'pkgutil' has no attribute 'ImpImporter'"
    target = _fake_target(tmp_path, error)
    out = tmp_path / "pegasus.pyz"
    assert build_zipapp.main(["--python", str(target), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"build_zipapp: pip {pip.__version__} (of {sys.executable}) cannot "
                          f"run under --python {target}"), err
    assert error in err
    assert f"pip install -U pip shiv && /tmp/zb/bin/python build_zipapp.py --python {target}" \
        in err, err
    assert not out.exists()
