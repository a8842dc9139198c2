"""The installed distribution (the wheel CI builds) agrees with the code and the source tree.

- ``stabilize_events.__version__``, ``stabilize-events --version`` and the distribution's
  metadata name one version, the one in Cargo.toml (pyproject takes its version from there);
- the classifiers name the running Python, and the lowest one is the wheel's abi3 floor and
  ``requires-python``'s;
- the extras the test suite relies on (``test``, which holds ``postgres``'s and
  ``stabilize``'s requirements) are installed at versions they allow.

Run from a source tree (``PYTHONPATH=python``) there is no installed distribution of this code
to check, and the tests skip saying so.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import stabilize_events
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def dist() -> importlib.metadata.Distribution:
    """The installed distribution this ``stabilize_events`` was imported from."""
    if stabilize_events.__version__.startswith("unknown"):
        pytest.skip(f"stabilize_events is {stabilize_events.__version__}: install it to check its metadata")
    return importlib.metadata.distribution("stabilize-events")


def test_versions_agree(dist: importlib.metadata.Distribution) -> None:
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]["version"]
    assert stabilize_events.__version__ == dist.version == cargo
    # The console script the distribution installed, beside this Python.
    script = Path(sys.executable).with_name("stabilize-events")
    printed = subprocess.run([script, "--version"], check=True, capture_output=True, text=True).stdout
    assert printed.strip() == f"stabilize-events {dist.version}"


def test_classifiers_name_this_python_and_the_abi3_floor(dist: importlib.metadata.Distribution) -> None:
    classifiers = dist.metadata.get_all("Classifier") or []
    pythons = sorted(
        tuple(map(int, m[1].split(".")))
        for c in classifiers
        if (m := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", c))
    )
    assert sys.version_info[:2] in pythons, f"{sys.version_info[:2]} not in the classifiers {pythons}"
    floor = "{}.{}".format(*pythons[0])
    assert dist.metadata["Requires-Python"] == f">={floor}"
    # The wheel's tag (pip writes it into the installed WHEEL file): cp311-abi3-<platform>.
    tags = [
        line.split(": ", 1)[1]
        for line in (dist.read_text("WHEEL") or "").splitlines()
        if line.startswith("Tag: ")
    ]
    assert tags, "no Tag in the installed WHEEL file"
    for tag in tags:
        interpreter, abi, _platform = tag.split("-")
        assert (interpreter, abi) == ("cp" + floor.replace(".", ""), "abi3"), tag


@pytest.mark.parametrize("extra", ["test", "postgres", "stabilize"])
def test_extras_the_suite_uses_are_installed(dist: importlib.metadata.Distribution, extra: str) -> None:
    assert extra in (dist.metadata.get_all("Provides-Extra") or [])
    wanted = [
        req
        for req in map(Requirement, dist.requires or [])
        if req.marker is not None and req.marker.evaluate({"extra": extra})
    ]
    assert wanted, f"the {extra} extra requires nothing"
    for req in wanted:
        installed = importlib.metadata.version(req.name)
        assert SpecifierSet(str(req.specifier)).contains(installed, prereleases=True), (req, installed)


def test_missing_core_says_what_to_build(tmp_path: Path) -> None:
    """A source tree without its compiled core names the missing core and how to build it."""
    package = Path(stabilize_events.__file__).parent
    copy = tmp_path / "stabilize_events"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("_core*.so", "_core*.pyd", "__pycache__"))
    done = subprocess.run(
        [sys.executable, "-c", "import stabilize_events"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: stabilize_events' compiled core (stabilize_events._core) could not")
    assert "maturin develop --release" in last
    assert "circular import" not in last
