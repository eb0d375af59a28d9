"""Every built-in strategy and a custom one on the bundled SmolLM2, through both generators.

``openai`` runs against a real OpenAI-compatible server on loopback: llama.cpp's
(``llama-cpp-python[server]``, which ``make test`` installs) serving the bundled GGUF file. These
tests fail, not skip, when it is missing: the generator must be tested against a real server.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from swiftstudy import build_probes
from swiftstudy.cli.main import main
from swiftstudy.data import load_examples
from swiftstudy.data.strategies import (
    build_context,
    load_strategy,
    render_generation_prompt,
)
from swiftstudy.generate import (
    CachedGenerator,
    GenerationCache,
    HFGenerator,
    HFSettings,
    OpenAIChatGenerator,
    OpenAISettings,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_NEW_TOKENS = 96
#: One thread: on the shared 2-CPU test machine, two torch threads wait on each other (6x slower).
HF_SETTINGS = HFSettings(max_new_tokens=MAX_NEW_TOKENS, threads=1)

REFERENCES = [
    {"id": "add", "task": "arith", "prompt": "What is 17 + 25?", "response": "42"},
    {
        "id": "capital",
        "task": "capital",
        "prompt": "What is the capital of Italy?",
        "response": "Rome",
        "label": "positive",
    },
    {
        "id": "plural",
        "task": "plural",
        "prompt": "Give the plural of the word 'child'.",
        "response": "childs",
        "label": "negative",
    },
]

#: The hf tests use two (a positive and a negative): on 2 CPUs, prompt tokens dominate their time.
HF_REFERENCES = [REFERENCES[0], REFERENCES[2]]

CUSTOM = """\
# Conclusion first, then the reason (the reverse of cot).
name: conclusion-first
generation:
  prompt: |-
    Question: {{ query }}
    Correct answer: {{ response }}

    In one or two sentences, explain why the correct answer is right.
  parse: '(?s)(?P<reason>\\S.*\\S)'
outputs:
  - kind: conclusion-first
    query: "{{ query }} Give the final answer first, then the reason."
    response: "The final answer is {{ response }}. {{ reason }}"
"""

OUTPUT_KINDS = {
    "cot": ["cot"],
    "clarify": ["clarified", "clarification"],
    "eval": ["eval"],
    "similar": ["similar"],
    "custom": ["conclusion-first"],
}


@pytest.fixture(scope="session")
def openai_cache(tmp_path_factory) -> Path:
    """One answer cache for the server's tests, so the study test reuses their answers."""
    return tmp_path_factory.mktemp("openai-cache")


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory) -> Path:
    """Every strategy's prompts answered by the bundled model in one batched call, cached.

    One batch of 10 shares the decoding steps that five calls of 2 would each pay for.
    """
    root = tmp_path_factory.mktemp("hf")
    refs = load_examples(_write_references(root / "refs.jsonl", HF_REFERENCES))
    prompts = []
    for name in OUTPUT_KINDS:
        strategy = load_strategy(_strategy(name, root))
        for ref in refs:
            context = build_context(strategy, ref)
            prompts.append(render_generation_prompt(strategy, ref, context))
    generator = HFGenerator(replace(HF_SETTINGS, batch_size=len(prompts)))
    CachedGenerator(generator, GenerationCache(root / "cache")).generate(prompts)
    return root / "cache"


def _write_references(path: Path, references: list[dict] = REFERENCES) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in references))
    return path


@pytest.fixture()
def refs(tmp_path: Path) -> Path:
    return _write_references(tmp_path / "refs.jsonl")


def _strategy(name: str, tmp_path: Path) -> str | Path:
    if name != "custom":
        return name
    path = tmp_path / "conclusion-first.yaml"
    path.write_text(CUSTOM)
    return path


def _check_probe_files(result, name: str, references: list[dict] = REFERENCES) -> None:
    """Valid probe files: one probe per parsed reference, every failure with a reason."""
    assert result.n_probes >= 1, [f.reason + ": " + f.answer for f in result.failures]
    assert result.n_probes + len(result.failures) == len(references)
    assert list(result.files) == OUTPUT_KINDS[name]
    failed = {f.source_id for f in result.failures}
    for kind, path in result.files.items():
        examples = load_examples(path)
        assert [e.id for e in examples] == [r["id"] for r in references if r["id"] not in failed]
        for example, line in zip(examples, path.read_text().splitlines(), strict=True):
            record = json.loads(line)
            assert record["kind"] == kind and record["source_id"] == example.id
            assert record["strategy"] == result.strategy.name
            reference = next(r for r in references if r["id"] == example.id)
            assert example.task == reference["task"]
            assert example.response.strip()
    for failure in result.failures:
        assert failure.reason


@pytest.mark.parametrize("name", list(OUTPUT_KINDS))
def test_strategy_through_openai_on_llama_cpp_server(
    llama_server, openai_cache, tmp_path, refs, name
):
    # No model name: the generator asks the server for the one it serves.
    settings = OpenAISettings(base_url=llama_server, max_new_tokens=MAX_NEW_TOKENS)
    out = tmp_path / f"{name}.jsonl"

    result = build_probes(
        _strategy(name, tmp_path), refs, out, generator=OpenAIChatGenerator(settings),
        cache_dir=openai_cache,
    )  # fmt: skip

    _check_probe_files(result, name)
    assert result.n_generated + result.n_cached == len(REFERENCES)
    again = OpenAIChatGenerator(settings)
    rerun = build_probes(result.strategy, refs, out, generator=again, cache_dir=openai_cache)
    assert (rerun.n_generated, rerun.n_cached, again.requests) == (0, len(REFERENCES), 0)


@pytest.mark.parametrize("name", list(OUTPUT_KINDS))
def test_strategy_through_hf_on_bundled_model(hf_cache, tmp_path, name):
    generator = HFGenerator(HF_SETTINGS)  # its answers are in hf_cache: it never loads
    refs = _write_references(tmp_path / "refs.jsonl", HF_REFERENCES)
    result = build_probes(
        _strategy(name, tmp_path), refs, tmp_path / f"{name}.jsonl", generator=generator,
        cache_dir=hf_cache,
    )  # fmt: skip
    _check_probe_files(result, name, HF_REFERENCES)
    assert (result.n_cached, result.n_generated) == (len(HF_REFERENCES), 0)


def test_probes_feed_swiftstudy_study_on_the_bundled_model(
    llama_server, openai_cache, tmp_path, refs, monkeypatch, capsys
):
    from conftest import add_random_lora
    from swiftstudy.model import load_base_model

    monkeypatch.chdir(tmp_path)
    common = ["--in", "refs.jsonl", "--max-new-tokens", str(MAX_NEW_TOKENS), "--no-progress"]
    common += ["--cache-dir", str(openai_cache)]
    openai = ["--generator", "openai", "--base-url", llama_server]
    assert main(["probes", "--strategy", "cot", "--out", "cot.jsonl", *openai, *common]) == 0
    assert main(["probes", "--strategy", "eval", "--out", "eval.jsonl", *openai, *common]) == 0
    model, _ = load_base_model("smollm2")
    add_random_lora(model, r=8, alpha=16)[0].save_pretrained(tmp_path / "run" / "checkpoint-10")
    spec = {
        "model": "smollm2",
        "checkpoints": "run",
        "sets": {
            "refs": {"path": "refs.jsonl"},
            "cot": {"path": "cot.jsonl"},
            "eval": {"path": "eval.jsonl"},
        },
        "metrics": [
            {"name": "CoT in-task", "probes": "cot", "evals": "refs", "context": "in-task"},
            {"name": "Eval in-task", "probes": "eval", "evals": "refs", "context": "in-task"},
        ],
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec))
    capsys.readouterr()

    assert main(["study", "study.yaml", "--out", "study", "--no-progress"]) == 0
    assert "results in" in capsys.readouterr().out
