"""The examples in ``examples/`` run as users run them, in a subprocess from the repository root."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

pytest.importorskip("stabilize", reason="the Stabilize example needs pip install '.[stabilize]'")


def run_example(name: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` with this interpreter from ``cwd``; its output as text."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_stabilize_app_runs_on_our_store() -> None:
    before = set(REPO.iterdir())
    done = run_example("stabilize_app.py", REPO)
    assert done.returncode == 0, done.stderr
    out = done.stdout

    # The workflow succeeded, its events were written into our store.
    first = out.splitlines()[0]
    assert re.match(r"Workflow 'Fan-out and back': SUCCEEDED, \d+ events in SqliteEventStore\(", first), first

    # The timeline shows every stage starting and completing, and the retried task.
    stages = ["Fetch", "Parse", "Upload (flaky)", "Count", "Report"]
    timeline = out.split("Timeline", 1)[1].split("Stage metrics:", 1)[0]
    for stage in stages:
        assert re.search(rf"stage\.started\s+stage\s+{re.escape(stage)}\n", timeline), stage
        assert re.search(rf"stage\.completed\s+stage\s+{re.escape(stage)} \(\d+ ms\)", timeline), stage
    assert "task.retried" in timeline
    assert "workflow.completed" in timeline

    # Stage metrics per stage type: four python stages and the upload, all succeeded.
    assert "python  executions=4 succeeded=4 failed=0 success_rate=100%" in out
    assert "upload  executions=1 succeeded=1 failed=0 success_rate=100%" in out

    # The replayed state agrees.
    assert "Replayed state: status=SUCCEEDED, 5 stages" in out
    for stage in stages:
        assert f"  stage {stage}: SUCCEEDED" in out
    assert "task Upload retried 1 time(s), then SUCCEEDED" in out

    # Its database went to a temporary directory, not the working directory.
    assert set(REPO.iterdir()) == before
