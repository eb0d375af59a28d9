"""The one table of ``benchmarks/gpu.sh``, from what its steps left in its work folder.

Reads ``steps/<name>.json`` (each step's status and wall time, written by ``gpu.sh``),
``engine.json`` and ``peers.json`` (``--json`` of ``engine.py`` and ``peers.py``), the study's
``results/`` and, after ``torchrun``, ``results-2proc/``, and prints one Markdown table: every row
names the device it ran on; a step that failed or was skipped keeps its row and says why. Below it:
the machine (CPU, vector extensions, threads; on CUDA the GPU).

    python benchmarks/gpu_table.py WORK --device cpu --examples 4 --steps 2
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

PEERS = {"bergson": "Bergson", "kronfluence": "Kronfluence"}
COLUMNS = (
    "measurement",
    "device",
    "seconds",
    "s/example",
    "time / naive",
    "time / floor",
    "Gram error vs float64",
    "peak GiB",
    "note",
)
_ENGINE_ROWS = (
    ("naive", "naive loop, float32"),
    ("engine", "engine, float32"),
    ("floor", "floor: a LoRA training step, float32"),
    ("engine-bf16", "engine, bfloat16"),
)


@dataclass
class Row:
    """One line of the table; ``None`` figures print as ``-``."""

    measurement: str
    device: str
    seconds: float | None = None
    per_example: float | None = None
    vs_naive: float | None = None
    vs_floor: float | None = None
    gram_error: float | None = None
    peak_gib: float | None = None
    note: str = ""

    def render(self) -> str:
        cells = (
            self.measurement,
            self.device,
            _number(self.seconds, ".1f"),
            _number(self.per_example, ".3f"),
            _number(self.vs_naive, ".2f", "x"),
            _number(self.vs_floor, ".2f", "x"),
            _number(self.gram_error, ".1e"),
            _number(self.peak_gib, ".2f"),
            self.note,
        )
        return "| " + " | ".join(cells) + " |"


def _number(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _step(work: Path, name: str) -> dict[str, Any]:
    """A step's record; a step with none never ran (the script stopped before it)."""
    return _read_json(work / "steps" / f"{name}.json") or {"status": "missing"}


def _why_not(work: Path, name: str, step: dict[str, Any]) -> str:
    """The note of a step without figures: skipped (and why), or failed (and its log)."""
    if step["status"] == "skipped":
        return step.get("reason", "skipped")
    if step["status"] == "missing":
        return "not run"
    log = work / "logs" / f"{name}.log"
    return f"failed (exit {step.get('exit', '?')}): see {log}"


def engine_rows(work: Path, device: str) -> list[Row]:
    """Engine vs naive vs floor, and bf16 vs float32, from ``engine.py --json``."""
    step = _step(work, "engine")
    found = _read_json(work / "engine.json") if step["status"] == "ok" else None
    by_method = {row["method"]: row for row in found["rows"]} if found else {}
    naive = by_method.get("naive")
    engine = by_method.get("engine")
    rows = []
    for method, label in _ENGINE_ROWS:
        row = by_method.get(method)
        if row is None:
            rows.append(Row(label, device, note=_why_not(work, "engine", step)))
            continue
        budget = row["batch_tokens"]
        note = "" if budget is None else f"batch_tokens={budget}"
        if method == "engine-bf16" and engine is not None:
            note += f"; time {row['seconds'] / engine['seconds']:.2f}x the float32 engine's"
        rows.append(
            Row(
                label,
                device,
                seconds=row["seconds"],
                per_example=row["per_example"],
                vs_naive=row["seconds"] / naive["seconds"] if naive else None,
                vs_floor=row["time_vs_floor"],
                gram_error=row["gram_error"],
                peak_gib=row["peak_gib"],
                note=note.lstrip("; "),
            )
        )
    label = "float64 reference (naive loop)"
    if found and found.get("reference_seconds") is not None:
        seconds = found["reference_seconds"]
        note = f"{found['examples']} examples, {found['tokens']} tokens"
        rows.append(Row(label, device, seconds, seconds / found["examples"], note=note))
    else:
        rows.append(Row(label, device, note=_why_not(work, "engine", step)))
    return rows


def _gradients_computed(log: Path) -> int | None:
    try:
        found = re.search(r"gradients: (\d+) computed", log.read_text(encoding="utf-8"))
    except OSError:
        return None
    return int(found.group(1)) if found else None


def _relinf(results: Path) -> dict[tuple[str, ...], float]:
    """Every scored pair's RelInf in a study's ``relinf.csv``, by step and the two examples."""
    with (results / "relinf.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    keys = ("step", "probe_set", "probe_id", "eval_set", "eval_id")
    return {tuple(r[k] for k in keys): float(r["relinf"]) for r in rows if r["relinf"]}


def compare_with_one_process(work: Path) -> str:
    """How far the two-process study's RelInf lies from the one-process study's."""
    try:
        one = _relinf(work / "study" / "results")
        two = _relinf(work / "study" / "results-2proc")
    except OSError:
        return "no 1-process results to compare"
    if one.keys() != two.keys() or not one:
        return "its RelInf pairs differ from 1 process"
    gap = max(abs(one[key] - two[key]) for key in one)
    return f"max RelInf difference vs 1 process {gap:.1e}"


def study_rows(work: Path, device: str, opts: argparse.Namespace) -> list[Row]:
    """The base run, the study, and the two-process study, each a whole command, timed."""
    rows = []
    train = _step(work, "train")
    label = f"swiftstudy train: base run, {opts.steps} steps"
    if train["status"] == "ok":
        checkpoints = sorted((work / "study" / "runs" / "base").glob("checkpoint-*"))
        rows.append(Row(label, device, train["seconds"], note=f"{len(checkpoints)} checkpoints"))
    else:
        rows.append(Row(label, device, note=_why_not(work, "train", train)))
    size = f"{opts.examples} probes x {opts.examples} evals"
    for name, label in (
        ("study", f"swiftstudy study: {size}"),
        ("torchrun", f"swiftstudy study, torchrun 2 processes (nccl): {size}"),
    ):
        step = _step(work, name)
        row_device = f"{device} x2" if name == "torchrun" and step["status"] == "ok" else device
        if step["status"] != "ok":
            rows.append(Row(label, row_device, note=_why_not(work, name, step)))
            continue
        computed = _gradients_computed(work / "logs" / f"{name}.log")
        note = f"gradients: {computed} computed (cache off)"
        if name == "torchrun":
            note += "; " + compare_with_one_process(work)
        per_gradient = step["seconds"] / computed if computed else None
        rows.append(Row(label, row_device, step["seconds"], per_gradient, note=note))
    return rows


def peer_rows(work: Path, device: str) -> list[Row]:
    """Bergson and Kronfluence on the engine's work (``peers.py --json``), or why not."""
    step = _step(work, "peers")
    missing = set()
    listed = work / "peers-missing"
    if listed.is_file():
        missing = set(listed.read_text(encoding="utf-8").split())
    found = _read_json(work / "peers.json") if step["status"] == "ok" else None
    rows = []
    for peer, name in PEERS.items():
        if peer in missing:
            rows.append(Row(name, device, note="not installed"))
            continue
        measured = [r for r in (found or {}).get("rows", []) if r.get("peer") == peer]
        if not measured:
            rows.append(Row(name, device, note=_why_not(work, "peers", step)))
        for r in measured:
            rows.append(
                Row(
                    r["label"],
                    device,
                    seconds=r["seconds"],
                    per_example=r["per_example"],
                    vs_naive=r["time_vs_naive"],
                    gram_error=r["gram_error"],
                    peak_gib=r["peak_gib"],
                    note="Gram step included",
                )
            )
    return rows


def render_table(work: Path, opts: argparse.Namespace) -> str:
    """The Markdown table and the machine line below it."""
    from common import describe_machine

    rows = [
        *engine_rows(work, opts.device),
        *study_rows(work, opts.device, opts),
        *peer_rows(work, opts.device),
    ]
    engine = _read_json(work / "engine.json") or {}
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *(row.render() for row in rows),
        "",
        f"{describe_machine(engine.get('threads', opts.threads), opts.device)}; "
        f"engine workload: {opts.examples} examples; work folder {work}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--device", required=True)
    parser.add_argument("--examples", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--threads", type=int, default=None)
    opts = parser.parse_args()
    if opts.threads is None:
        import torch

        opts.threads = torch.get_num_threads()
    print(render_table(opts.work, opts))


if __name__ == "__main__":
    main()
