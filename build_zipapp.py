#!/usr/bin/env python3
"""Build dist/pegasus.pyz: Pegasus and its dependencies in one executable file.

    python3 build_zipapp.py [--python PYTHON] [--output PATH] [--constraint FILE]

pip (run for the interpreter ``--python``, default: the one running this
script) installs the project and the dependencies it declares in
pyproject.toml into a temporary folder; shiv zips that folder into an
executable zipapp with a ``#!/usr/bin/env python3`` shebang whose entry point
is ``pegasus.cli:run``.  ``--constraint`` pins exact versions (a pip
constraints file, e.g. from ``pip freeze``); the versions bundled are printed
at the end either way.

gevent, greenlet and ssh2-python carry compiled code, so the .pyz runs only
where the ``--python`` interpreter would: same OS and CPU architecture, same
Python minor version.  Build one per Python version you need:
``python3 build_zipapp.py --python python3.12 -o dist/pegasus-py312.pyz``.

Needs ``shiv`` and pip >= 22.3 in the interpreter that runs this script
(``pip install shiv``), and PyPI (or a pip cache/index) to fetch the
dependencies.  pip's ``--python`` runs that same pip's code under the target
interpreter, so the pip must also support the target's Python version (for
Python 3.12, pip 23.1.2 or later: Debian 12's pip 23.0 fails there with
``pkgutil.ImpImporter``); the script checks this first and says what to do.  On first run the .pyz extracts itself into ``~/.shiv``
(``SHIV_ROOT`` picks another folder).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

PROJECT = Path(__file__).resolve().parent
ENTRY_POINT = "pegasus.cli:run"
SHEBANG = "/usr/bin/env python3"
# What pip needs to build the project wheel (nothing else is copied, so
# stray build/ folders, virtualenvs and caches never end up in the .pyz).
SOURCES = ["pyproject.toml", "README.md", "pegasus"]


class BuildError(RuntimeError):
    """A build step failed; the message says which and why."""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter whose platform and Python version the .pyz targets "
                             "(default: this one, %(default)s)")
    parser.add_argument("-o", "--output", default=str(PROJECT / "dist" / "pegasus.pyz"),
                        help="the zipapp to write (default: %(default)s)")
    parser.add_argument("-c", "--constraint", action="append", default=[],
                        help="pip constraints file pinning dependency versions (repeatable)")
    parser.add_argument("--shebang", default=SHEBANG,
                        help="interpreter line of the .pyz (default: %(default)s)")
    return parser.parse_args(argv)


def run(cmd: List[str]) -> None:
    """Run a build command, echoing it; raise BuildError if it fails."""
    print("+ " + shlex.join(cmd), flush=True)
    if subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode != 0:
        raise BuildError("command failed: " + " ".join(cmd))


TARGET_PROBE = """
import json, platform, sys, sysconfig
print(json.dumps({"implementation": platform.python_implementation(),
                  "version": "%d.%d" % sys.version_info[:2], "platform": sys.platform,
                  "machine": platform.machine(), "tag": sysconfig.get_platform(),
                  "executable": sys.executable}))
"""

# Run by the .pyz (a shiv preamble) before Pegasus imports its compiled
# dependencies: a clear message instead of an ImportError deep in gevent.
# build() replaces the TARGET line.
PREAMBLE = r'''
"""Refuse to run on an interpreter the bundled compiled modules do not fit."""
import platform
import sys

TARGET = None


def where(implementation, version, platform, machine):
    return "%s %s on %s-%s" % (implementation, version, platform, machine)


here = {"implementation": platform.python_implementation(),
        "version": "%d.%d" % sys.version_info[:2],
        "platform": sys.platform, "machine": platform.machine()}
if here != TARGET:
    sys.stderr.write(
        "pegasus: this pegasus.pyz was built for %s and cannot run on %s: build one "
        "for this interpreter with 'python3 build_zipapp.py --python %s', or install "
        "Pegasus with pip\n" % (where(**TARGET), where(**here), sys.executable or "python3"))
    sys.exit(2)
'''.lstrip()


def probe_target(python: str) -> dict:
    """Implementation, minor version, OS and CPU of the interpreter ``python``."""
    try:
        res = subprocess.run([python, "-c", TARGET_PROBE], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=60)
    except OSError as err:
        raise BuildError("cannot run --python %s: %s" % (python, err))
    if res.returncode != 0:
        raise BuildError("--python %s does not work: %s" % (python, res.stderr.strip()))
    return json.loads(res.stdout)


def describe(target: dict) -> str:
    """'CPython 3.11 on linux-x86_64'."""
    return "%(implementation)s %(version)s on %(tag)s" % target


def write_preamble(folder: Path, target: dict) -> Path:
    """The target check the .pyz runs first (see PREAMBLE)."""
    keys = ("implementation", "version", "platform", "machine")
    path = folder / "pegasus_check_python.py"
    wanted = {key: target[key] for key in keys}
    path.write_text(PREAMBLE.replace("TARGET = None", "TARGET = %r" % wanted, 1))
    return path


def check_tools() -> None:
    """shiv and a pip that knows --python must be importable here."""
    try:
        import shiv  # noqa: F401
    except ImportError:
        raise BuildError("shiv is not installed for %s: run '%s -m pip install shiv'"
                         % (sys.executable, sys.executable))
    import pip

    if tuple(int(p) for p in pip.__version__.split(".")[:2]) < (22, 3):
        raise BuildError("pip %s is too old (--python needs 22.3): run '%s -m pip install -U pip'"
                         % (pip.__version__, sys.executable))


# The first pip whose code runs under a Python version, where an older one fails.
FIRST_PIP_FOR = {"3.12": "23.1.2"}  # older ones need pkgutil.ImpImporter


def check_pip_runs_under(python: str, target: dict) -> None:
    """pip --python runs this pip's own code with the target: it must work there."""
    import pip

    res = subprocess.run([sys.executable, "-m", "pip", "--python", target["executable"],
                          "--version"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=120)
    if res.returncode == 0:
        return
    said = (res.stderr.strip() or res.stdout.strip() or "no message").splitlines()[-1]
    first = FIRST_PIP_FOR.get(target["version"])
    raise BuildError(
        "pip %s (of %s) cannot run under --python %s (%s): pip --python runs this pip's "
        "own code there, so it must be a pip that supports Python %s%s. Build with a newer "
        "pip ('python3 -m venv /tmp/zb && /tmp/zb/bin/pip install -U pip shiv && "
        "/tmp/zb/bin/python build_zipapp.py --python %s'), or with the target itself "
        "('%s -m venv /tmp/zb && /tmp/zb/bin/pip install shiv && /tmp/zb/bin/python "
        "build_zipapp.py'). pip said: %s"
        % (pip.__version__, sys.executable, python, describe(target), target["version"],
           " (pip %s or later)" % first if first else "", python, python, said))


def copy_sources(dest: Path) -> Path:
    """A clean copy of what the project wheel is built from."""
    src = dest / "src"
    src.mkdir()
    for name in SOURCES:
        path = PROJECT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    return src


def install(python: str, src: Path, site_packages: Path, constraints: List[str]) -> None:
    """pip-install the project and its dependencies for ``python`` into site_packages."""
    cmd = [sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
           "--disable-pip-version-check", "--no-compile", "--target", str(site_packages)]
    for constraint in constraints:
        cmd += ["--constraint", os.path.abspath(constraint)]
    run(cmd + [str(src)])


def bundled_versions(site_packages: Path) -> List[str]:
    """'name version' of every distribution in site_packages."""
    found = []
    for meta in sorted(site_packages.glob("*.dist-info")):
        name, _, version = meta.name[: -len(".dist-info")].partition("-")
        found.append("%s %s" % (name, version))
    return found


def zip_app(site_packages: Path, preamble: Path, output: Path, shebang: str) -> None:
    """shiv: site_packages, the preamble and shiv's bootstrap into an executable zipapp."""
    output.parent.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "shiv", "--site-packages", str(site_packages),
         "--entry-point", ENTRY_POINT, "--preamble", str(preamble), "--python", shebang,
         "--compressed", "--output-file", str(output)])


def build(python: str, output: Path, constraints: List[str], shebang: str = SHEBANG) -> List[str]:
    """Build the zipapp for the interpreter ``python``; return the bundled distributions."""
    check_tools()
    target = probe_target(python)
    check_pip_runs_under(python, target)
    print("building %s for %s" % (output, describe(target)), flush=True)
    with tempfile.TemporaryDirectory(prefix="pegasus-zipapp-") as tmp:
        tmp_path = Path(tmp)
        site_packages = tmp_path / "site-packages"
        install(target["executable"], copy_sources(tmp_path), site_packages, constraints)
        zip_app(site_packages, write_preamble(tmp_path, target), output, shebang)
        return bundled_versions(site_packages)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    output = Path(args.output).resolve()
    started = time.monotonic()
    try:
        bundled = build(args.python, output, args.constraint, args.shebang)
    except BuildError as err:
        print("build_zipapp: %s" % err, file=sys.stderr)
        return 1
    print("bundled: " + ", ".join(bundled))
    print("wrote %s (%.1f MB) in %.1f s"
          % (output, output.stat().st_size / 1e6, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
