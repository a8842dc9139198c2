"""The Python examples of README.md and docs/usage.md run as a reader runs them: each
document's blocks pasted one after another into one script, in a fresh directory.

A few names the prose leaves to the reader (a Stabilize workflow to record, an alert
function) are given by a short prelude; everything else must run as written.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import stabilize_events

REPO = Path(__file__).resolve().parent.parent

pytest.importorskip("stabilize", reason="the examples record Stabilize's models: pip install '.[test]'")

#: What the documents assume the reader already has.
PRELUDE = textwrap.dedent(
    """
    from stabilize import StageExecution, TaskExecution, Workflow

    task = TaskExecution.create(name="build", implementing_class="shell", stage_start=True, stage_end=True)
    stage = StageExecution(ref_id="build", type="shell", name="Build", context={}, tasks=[task])
    workflow = Workflow.create(application="shop", name="deploy", stages=[stage])
    alerts = []
    send_alert = alerts.append
    track = alerts.append
    last_seen_sequence = 0
    """
)


def python_blocks(document: Path) -> list[str]:
    """The ```python blocks of ``document``, in order."""
    return re.findall(r"```python\n(.*?)```", document.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("document", ["README.md", "docs/usage.md"])
def test_the_python_examples_of_a_document_run_in_order(document: str, tmp_path: Path) -> None:
    blocks = python_blocks(REPO / document)
    assert blocks, f"{document} has no python examples"
    script = tmp_path / "examples.py"
    script.write_text(PRELUDE + "\n".join(blocks), encoding="utf-8")
    # The package under test, also where a relative PYTHONPATH would not reach from tmp_path.
    package_root = str(Path(stabilize_events.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{document}: an example failed:\n{done.stderr[-3000:]}"
