"""examples/notebook.py runs from a clean checkout: probes, a tiny base run, two session studies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebook.py"


def test_notebook_runs(tmp_path: Path):
    env = {**os.environ, "SWIFTSTUDY_NOTEBOOK_DIR": str(tmp_path / "work")}
    env.pop("SWIFTSTUDY_NOTEBOOK_RUN", None)
    done = subprocess.run(
        [sys.executable, str(NOTEBOOK)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "8 CoT probes" in out
    # Two checkpoints × 16 examples, then only the 8 CoT probes at each.
    assert "first study: 32 gradient(s) computed" in out
    assert "second study: 16 gradient(s) computed, 32 from the session's cache" in out
    assert "CoT → In-task" in out and "mean_relinf" in out
    report = tmp_path / "work" / "cot-study" / "report.md"
    assert "## Which probes drive each metric" in report.read_text()
