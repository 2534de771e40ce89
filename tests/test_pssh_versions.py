"""pegasus/sshclient.py relies on parallel-ssh internals: only the releases it was reviewed for."""
import re
from importlib.metadata import version
from pathlib import Path

from pegasus.sshclient import REVIEWED

ROOT = Path(__file__).resolve().parent.parent


def test_the_installed_parallel_ssh_and_ssh2_python_are_the_reviewed_releases():
    installed = {name: version(name) for name in REVIEWED}
    assert installed == REVIEWED, (
        "installed %s, but pegasus/sshclient.py was reviewed for %s: review "
        "pegasus/sshclient.py against the new version, then update REVIEWED and the "
        "pins in pyproject.toml" % (installed, REVIEWED))


def test_pyproject_pins_the_reviewed_releases():
    text = (ROOT / "pyproject.toml").read_text()
    for name, release in REVIEWED.items():
        assert '"%s==%s"' % (name, release) in text, "pin %s==%s in pyproject.toml" % (
            name, release)


def test_only_sshclient_imports_parallel_ssh_or_ssh2():
    uses = re.compile(r"^\s*(from|import)\s+(pssh|ssh2)\b", re.MULTILINE)
    importers = sorted(p.name for p in (ROOT / "pegasus").glob("*.py")
                       if uses.search(p.read_text()))
    assert importers == ["sshclient.py"]
