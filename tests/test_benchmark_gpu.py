"""``benchmarks/gpu.sh``: its table keeps every row whatever happened, and its CPU fallback runs
every step on the bundled model through the command a user types."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_table

ROOT = Path(__file__).resolve().parents[1]

ENGINE_ROWS = (
    "naive loop, float32",
    "engine, float32",
    "floor: a LoRA training step, float32",
    "engine, bfloat16",
    "float64 reference (naive loop)",
)


def _parse_table(text: str) -> tuple[list[dict[str, str]], list[str]]:
    """The table's rows as dicts by column, and the lines after it."""
    lines = text.strip().splitlines()
    table = [line for line in lines if line.startswith("|")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    rows = [
        dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        for line in table[2:]
    ]
    return rows, [line for line in lines if not line.startswith("|")]


def _number(cell: str) -> float:
    return float(cell.removesuffix("x"))


def _row(rows: list[dict[str, str]], prefix: str) -> dict[str, str]:
    found = [row for row in rows if row["measurement"].startswith(prefix)]
    assert len(found) == 1, (prefix, [row["measurement"] for row in rows])
    return found[0]


def test_failed_and_skipped_steps_keep_their_rows(tmp_path: Path):
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "engine.json").write_text(json.dumps({"status": "failed", "exit": 3, "seconds": 1}))
    (steps / "peers.json").write_text(json.dumps({"status": "skipped", "reason": "not installed"}))
    (tmp_path / "peers-missing").write_text("kronfluence\n")
    opts = argparse.Namespace(device="cuda", examples=48, steps=20, threads=1)
    rows, after = _parse_table(gpu_table.render_table(tmp_path, opts))
    assert len(rows) == 10
    assert {row["device"] for row in rows} == {"cuda"}
    for label in ENGINE_ROWS[:4]:
        assert _row(rows, label)["note"].startswith("failed (exit 3): see ")
        assert _row(rows, label)["seconds"] == "-"
    # No reference figures without the engine's run: the row says so rather than vanishing.
    assert _row(rows, ENGINE_ROWS[4])["note"].startswith("failed (exit 3)")
    assert _row(rows, "swiftstudy train")["note"] == "not run"
    assert _row(rows, "Bergson")["note"] == "not installed"
    assert _row(rows, "Kronfluence")["note"] == "not installed"
    assert after[-1].startswith("machine: ") and "engine workload: 48 examples" in after[-1]


@pytest.mark.slow
@pytest.mark.integration
def test_cpu_fallback_prints_every_row(tmp_path: Path):
    # As a user would run it on a machine without CUDA (hidden here, should torch see one).
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        ["bash", "benchmarks/gpu.sh", "--out", str(tmp_path / "work")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows, after = _parse_table(done.stdout)
    assert {row["device"] for row in rows} == {"cpu"}
    for label in ENGINE_ROWS:
        row = _row(rows, label)
        assert _number(row["seconds"]) > 0 and _number(row["s/example"]) > 0
    naive, engine, bf16 = (_row(rows, label) for label in ENGINE_ROWS[:2] + ENGINE_ROWS[3:4])
    assert _number(naive["time / naive"]) == 1.0
    assert _number(engine["time / floor"]) > 0 and _number(engine["peak GiB"]) > 0
    # float32 agrees with float64 to float32's error; bfloat16 is far coarser.
    assert _number(engine["Gram error vs float64"]) < 1e-3
    assert _number(bf16["Gram error vs float64"]) > 10 * _number(engine["Gram error vs float64"])
    assert re.fullmatch(r"batch_tokens=\d+; time \d+\.\d\dx the float32 engine's", bf16["note"])

    train = _row(rows, "swiftstudy train: base run, 2 steps")
    assert _number(train["seconds"]) > 0 and train["note"] == "2 checkpoints"
    study = _row(rows, "swiftstudy study: 4 probes x 4 evals")
    # 4 probes and 4 evals, distinct examples, at each of the 2 checkpoints.
    assert study["note"] == "gradients: 16 computed (cache off)"
    assert _number(study["seconds"]) > 0 and _number(study["s/example"]) > 0
    assert _row(rows, "swiftstudy study, torchrun")["note"].startswith("skipped: device cpu")
    for peer in ("bergson", "kronfluence"):
        peer_rows = [r for r in rows if r["measurement"].lower().startswith(peer)]
        assert peer_rows
        for row in peer_rows:
            if row["note"] != "not installed":
                assert _number(row["seconds"]) > 0
    assert after[-1].startswith("machine: ") and " threads" in after[-1]
