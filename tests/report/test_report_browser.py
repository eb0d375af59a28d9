"""The report of a tiny-model study, opened in headless Chromium: figures decode and show, and
the verdict table is there.

Chromium is required, not optional: without it this test fails (``make test`` installs it; by
hand, ``apt-get install -y chromium``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from swiftstudy.study import run_study
from test_study import build_study_dir

pytestmark = pytest.mark.slow
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Marks, once the page has loaded, how many images decoded and shows, and the verdict table.
PROBE_SCRIPT = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const shown = images.filter((img) => img.complete && img.naturalWidth > 0
    && img.getBoundingClientRect().width > 100 && img.getBoundingClientRect().height > 100);
  const table = document.getElementById("verdict-table");
  const box = table ? table.getBoundingClientRect() : null;
  const rows = table && box.height > 0 ? table.querySelectorAll("tbody tr").length : -1;
  document.body.dataset.images = `${shown.length}/${images.length}`;
  document.body.dataset.verdictRows = String(rows);
});
</script>
</body>"""


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium is required for this test: apt-get install -y chromium")


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        _browser(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """The report.html of a study on a tiny random model with two checkpoints."""
    root = build_study_dir(tmp_path_factory.mktemp("browser"))
    result = run_study(root / "study.yaml", root / "out", progress=False)
    return result.out_dir / "report.html"


def test_figures_decode_and_verdict_table_shows(report: Path, tmp_path: Path):
    page = report.read_text()
    n_images = len(re.findall(r"<img ", page))
    assert n_images == 4  # metrics by step, heatmap, distributions, gradient norms
    probe = report.with_name("probe.html")
    probe.write_text(page.replace("</body>", PROBE_SCRIPT, 1))
    dom = _chromium(
        tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()
    ).stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert f'data-images="{n_images}/{n_images}"' in body, body
    assert 'data-verdict-rows="2"' in body, body  # CoT → In-task and CoT → Cross-task
    assert "CoT → In-task" in dom and "Verdict rule:" in dom


def _colourful_pixels(png: Path) -> int:
    pixels = matplotlib.image.imread(png)[..., :3]
    return int(((pixels.max(axis=-1) - pixels.min(axis=-1)) > 0.25).sum())


def test_screenshot_shows_the_figures(report: Path, tmp_path: Path):
    """Figures are visible: the page has far more coloured pixels with them than without."""
    without = report.with_name("no-figures.html")
    without.write_text(re.sub(r'<img src="data:[^"]+"', '<img src=""', report.read_text()))
    shots = {}
    for name, page in (("with", report), ("without", without)):
        shots[name] = tmp_path / f"{name}.png"
        _chromium(
            tmp_path / f"profile-{name}",
            f"--screenshot={shots[name]}",
            "--window-size=1200,3000",
            page.as_uri(),
        )
    pixels = matplotlib.image.imread(shots["with"])
    assert pixels.shape[:2] == (3000, 1200)
    assert np.asarray(pixels[..., :3]).var() > 1e-3, "the page is blank"
    with_figures, without_figures = (_colourful_pixels(shots[n]) for n in ("with", "without"))
    assert with_figures > without_figures + 20_000, (with_figures, without_figures)
