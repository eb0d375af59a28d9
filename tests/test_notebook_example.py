"""examples/notebook.py runs from a clean checkout: probes, a tiny base run, two session studies."""

from __future__ import annotations

import os
import re
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
    # One CoT probe per demo task (made from its nocot example), at least 8 tasks.
    n = int(re.search(r"^(\d+) CoT probes", out, re.MULTILINE).group(1))
    assert n >= 8
    # Two checkpoints × (n nocot + n similar examples), then only the n CoT probes at each.
    assert f"first study: {4 * n} gradient(s) computed" in out
    assert f"second study: {2 * n} gradient(s) computed, {4 * n} from the session's cache" in out
    assert "CoT → In-task" in out and "mean_relinf" in out
    report = tmp_path / "work" / "cot-study" / "report.md"
    assert "## Which probes drive each metric" in report.read_text()
