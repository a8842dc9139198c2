"""A short run of the payload-decoder fuzzer (fuzz/fuzz_decode.py) as a subprocess: it must exit 0.

The long run (a million inputs and more) is manual, see fuzz/README.md.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZER = ROOT / "fuzz" / "fuzz_decode.py"
CORPUS = ROOT / "fuzz" / "corpus"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris is not installed (pip install atheris, or the [test] extra)",
)


def run_fuzzer(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    work = tmp_path / "corpus"  # new inputs go here, not into the committed seed corpus
    work.mkdir(exist_ok=True)
    return subprocess.run(
        [
            sys.executable,
            str(FUZZER),
            *args,
            f"-artifact_prefix={tmp_path}/",
            "-timeout=20",
            str(work),
            str(CORPUS),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_fuzz_decode_short_run(tmp_path: Path) -> None:
    runs = 20_000
    proc = run_fuzzer(tmp_path, f"-runs={runs}", "-seed=1")
    tail = proc.stderr[-4000:]
    assert proc.returncode == 0, tail
    assert f"Done {runs} runs" in proc.stderr, tail
    assert not list(tmp_path.glob("crash-*")), tail


def test_fuzz_corpus_passes(tmp_path: Path) -> None:
    proc = run_fuzzer(tmp_path, "-runs=0")
    assert proc.returncode == 0, proc.stderr[-4000:]
