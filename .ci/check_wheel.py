"""Check the release artifacts in a directory (default ``dist``) and report their sizes.

``python .ci/check_wheel.py [DIR]`` fails (exit 1, saying what is wrong) unless DIR holds one
sdist and at least one wheel, all of one version, and each wheel:

- is tagged ``cp311-abi3`` and ``manylinux_2_17_<arch>`` (manylinux2014);
- passes ``auditwheel show`` for that tag: its code uses no glibc symbol newer than 2.17 and
  no extended instruction set, and its one external library is ``libsqlite3.so.0``, the one
  Python's ``sqlite3`` module loads (auditwheel is given no library path, so that the host's
  libsqlite3, built for the host's newer glibc, is not counted against the wheel's own code);
- carries no libsqlite3 of its own and exactly one extension module, ``stabilize_events/_core``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL_NAME = re.compile(r"^stabilize_events-(?P<version>[^-]+)-cp311-abi3-(?P<platforms>[a-z0-9_.]+)\.whl$")
SDIST_NAME = re.compile(r"^stabilize_events-(?P<version>[^-]+)\.tar\.gz$")
#: The newest glibc a wheel may need, and the tag that says so.
GLIBC = (2, 17)
EXTERNAL_LIBRARIES = {"libsqlite3.so.0"}
SDIST_MEMBERS = (
    "Cargo.toml",
    "Cargo.lock",
    "pyproject.toml",
    "README.md",
    "src/lib.rs",
    "python/stabilize_events/__init__.py",
)


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.2f} MiB"


def check_wheel(wheel: Path) -> tuple[str, list[str]]:
    """The wheel's version and what is wrong with it (nothing when it passes)."""
    problems = []
    name = WHEEL_NAME.match(wheel.name)
    if name is None:
        return "", [f"{wheel.name}: not a cp311-abi3 wheel of stabilize_events"]
    platforms = name["platforms"].split(".")
    arch = platforms[0].removeprefix("manylinux2014_") if platforms[0].startswith("manylinux2014_") else ""
    if not arch or f"manylinux_2_17_{arch}" not in platforms:
        problems.append(f"{wheel.name}: platform tags {platforms}, want manylinux2014 / manylinux_2_17")
    with zipfile.ZipFile(wheel) as archive:
        members = archive.infolist()
    modules = [m for m in members if m.filename.endswith(".so")]
    if [m.filename for m in modules] != ["stabilize_events/_core.abi3.so"]:
        problems.append(f"{wheel.name}: shared objects {[m.filename for m in modules]}, want the core alone")
    if any("libsqlite3" in m.filename for m in members):
        problems.append(f"{wheel.name}: carries its own libsqlite3; it must use the host's")
    with tempfile.TemporaryDirectory() as no_libraries:
        shown = subprocess.run(
            [sys.executable, "-m", "auditwheel", "show", "--json", "--ldpaths", no_libraries, str(wheel)],
            check=True,
            capture_output=True,
            text=True,
        )
        human = subprocess.run(
            [sys.executable, "-m", "auditwheel", "show", "--ldpaths", no_libraries, str(wheel)],
            check=True,
            capture_output=True,
            text=True,
        )
    audit = json.loads(shown.stdout)
    print(human.stdout.strip())
    sym = re.fullmatch(r"manylinux_(\d+)_(\d+)_" + re.escape(arch or "x"), audit["sym_tag"])
    if sym is None or (int(sym[1]), int(sym[2])) > GLIBC:
        problems.append(f"{wheel.name}: auditwheel finds symbols for {audit['sym_tag']}, want glibc <= 2.17")
    if audit.get("unsupported_isa"):
        problems.append(f"{wheel.name}: uses an instruction set extension the tag does not allow")
    external = set(audit["external_libs"])
    if external != EXTERNAL_LIBRARIES:
        problems.append(
            f"{wheel.name}: external libraries {sorted(external)}, want {sorted(EXTERNAL_LIBRARIES)}"
        )
    size = wheel.stat().st_size
    core = modules[0].file_size if modules else 0
    print(f"{wheel.name}: {_mib(size)} ({size} bytes), the core {_mib(core)} unpacked")
    return name["version"], problems


def check_sdist(sdist: Path) -> tuple[str, list[str]]:
    """The sdist's version and what is wrong with it."""
    name = SDIST_NAME.match(sdist.name)
    if name is None:
        return "", [f"{sdist.name}: not an sdist of stabilize_events"]
    root = f"stabilize_events-{name['version']}/"
    with tarfile.open(sdist) as archive:
        names = set(archive.getnames())
    missing = [m for m in SDIST_MEMBERS if root + m not in names]
    print(f"{sdist.name}: {_mib(sdist.stat().st_size)} ({sdist.stat().st_size} bytes), {len(names)} files")
    return name["version"], [f"{sdist.name}: lacks {m}" for m in missing]


def main(argv: list[str]) -> int:
    """Check every artifact in the directory; 0 when all pass."""
    out = Path(argv[0] if argv else "dist")
    wheels = sorted(out.glob("*.whl"))
    sdists = sorted(out.glob("*.tar.gz"))
    problems = []
    if not wheels or len(sdists) != 1:
        problems.append(f"{out}: {len(wheels)} wheels and {len(sdists)} sdists, want wheels and one sdist")
    versions = set()
    for artifact, check in [*((w, check_wheel) for w in wheels), *((s, check_sdist) for s in sdists)]:
        version, found = check(artifact)
        versions.add(version)
        problems += found
    if len(versions) > 1:
        problems.append(f"{out}: artifacts of several versions {sorted(versions)}")
    for problem in problems:
        print(f"!!! {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
