"""Write the validation example's data (data/validation/*.jsonl) from the cot-mini rules.

    python examples/cot-mini/make_validation_data.py

``cot.jsonl`` / ``nocot.jsonl``: 64 study-task examples with and without reasons; ``eval.jsonl``:
48 held-out numeric base-task queries (plus, letters, after) that never appear in the base data.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import make_data as md

OUT = Path(__file__).resolve().parent / "data" / "validation"


def _eval_queries(train_prompts: set[str]) -> list[dict]:
    rng = random.Random(7)
    evals: list[dict] = []
    seen: set[str] = set()
    letters_left = 6  # few distinct words: keep the letter-count queries unique
    while len(evals) < 48:
        kind = rng.choice([0, 2] + [1] * (letters_left > 0))
        if kind == 0:
            a, b = rng.randint(1, 50), rng.randint(1, 50)
            q, ans, task = f"What is {a} plus {b}?", str(a + b), "plus"
        elif kind == 1:
            w = rng.choice(md.INITIAL_WORDS)
            q, ans, task = f"How many letters does the word '{w}' have?", str(len(w)), "letters"
        else:
            n = rng.randint(1, 98)
            q, ans, task = f"What number comes after {n}?", str(n + 1), "after"
        if q in train_prompts or q in seen:
            continue
        letters_left -= task == "letters"
        seen.add(q)
        evals.append({"id": f"e{len(evals)}", "task": task, "prompt": q, "response": ans})
    return evals


def main() -> None:
    base = md.DATA_DIR / "base.jsonl"
    train_prompts = {json.loads(line)["prompt"] for line in base.open()}
    rng = random.Random(1)
    cot, nocot = [], []
    for i in range(64):
        task = md.STUDY_TASKS[i % len(md.STUDY_TASKS)]
        q, a, reasons = task(rng)
        cot.append(
            {
                "id": f"c{i}",
                "task": task.__name__,
                "prompt": q + md.COT_SUFFIX,
                "response": f"{reasons} So the answer is {a}.",
            }
        )
        nocot.append({"id": f"n{i}", "task": task.__name__, "prompt": q, "response": a})
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in (("cot", cot), ("nocot", nocot), ("eval", _eval_queries(train_prompts))):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (OUT / f"{name}.jsonl").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
