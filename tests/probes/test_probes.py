"""build_probes and ``swiftstudy probes`` without a model: canned, none and stub-server answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model

from conftest import build_tiny_llama, build_tiny_tokenizer
from swiftstudy import build_probes
from swiftstudy.cli.main import main
from swiftstudy.data import load_examples
from swiftstudy.errors import InputError
from swiftstudy.generate import FunctionGenerator, HFGenerator, HFSettings
from swiftstudy.study import run_study
from test_generate_openai import SECRET, StubServer, completion

REFERENCES = [
    {"id": "add", "task": "arith", "prompt": "What is 17 + 25?", "response": "42"},
    {"id": "cls", "task": "sentiment", "prompt": "Classify: I loved it.", "response": "positive"},
    {
        "id": "fix",
        "task": "spelling",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Fix the spelling: speling"},
            {"role": "assistant", "content": "spelling"},
        ],
    },
]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cot_answer(prompt) -> str:
    """A CoT answer for every question but the sentiment one, which has no final answer line."""
    text = prompt[-1].content
    if "Classify" in text:
        return "It is about feelings."
    return f"Reasoning about: {text.splitlines()[0]}\nFinal answer: whatever"


@pytest.fixture()
def refs(tmp_path: Path) -> Path:
    return _write_jsonl(tmp_path / "refs.jsonl", REFERENCES)


def test_probes_keep_task_and_record_source_and_strategy(tmp_path, refs):
    generator = FunctionGenerator(cot_answer, name="canned")
    out = tmp_path / "out" / "cot.jsonl"

    result = build_probes("cot", refs, out, generator=generator, cache_dir=tmp_path / "cache")

    assert result.files == {"cot": out}
    assert (result.n_references, result.n_probes) == (3, 2)
    assert [(f.source_id, f.origin) for f in result.failures] == [("cls", f"{refs}:2")]
    assert "Final answer:" in result.failures[0].reason
    assert result.failures[0].answer == "It is about feelings."
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["add", "fix"]
    assert records[0] == {
        "id": "add",
        "task": "arith",
        "source_id": "add",
        "strategy": "cot",
        "kind": "cot",
        "prompt": "What is 17 + 25? Please output the reason first and then the final answer, "
        "regardless of the above description.",
        "response": "Reasoning about: Question: What is 17 + 25?\nSo the final answer is: 42",
    }
    assert [m["role"] for m in records[1]["messages"]] == ["system", "user", "assistant"]
    examples = load_examples(out)  # the study's loader reads them unchanged
    assert [(e.id, e.task) for e in examples] == [("add", "arith"), ("fix", "spelling")]


def test_config_records_strategy_input_generator_and_failures(tmp_path, refs):
    generator = FunctionGenerator(cot_answer, name="canned")
    result = build_probes(
        "cot", refs, tmp_path / "cot.jsonl", generator=generator, cache_dir=tmp_path / "c"
    )
    assert result.config_path == tmp_path / "cot.config.yaml"
    config = yaml.safe_load(result.config_path.read_text())
    assert config["strategy"]["name"] == "cot" and len(config["strategy"]["sha256"]) == 64
    assert config["input"]["path"] == str(refs) and config["input"]["n_references"] == 3
    assert config["generator"] == {"generator": "function", "name": "canned"}
    assert config["outputs"] == {"cot": str(tmp_path / "cot.jsonl")}
    assert config["failures"][0]["source_id"] == "cls"
    assert {"git_sha", "swiftstudy_version", "command"} <= set(config["provenance"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "c",
        "cot.config.yaml",
        "cot.jsonl",
        "refs.jsonl",
    ]


def test_second_run_reads_every_answer_from_the_cache(tmp_path, refs):
    first = FunctionGenerator(cot_answer, name="canned")
    build_probes("cot", refs, tmp_path / "a.jsonl", generator=first, cache_dir=tmp_path / "c")
    assert first.calls == 3

    second = FunctionGenerator(cot_answer, name="canned")
    result = build_probes(
        "cot", refs, tmp_path / "b.jsonl", generator=second, cache_dir=tmp_path / "c"
    )
    assert second.calls == 0
    assert (result.n_cached, result.n_generated) == (3, 0)
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


def test_limit_and_no_cache(tmp_path, refs):
    generator = FunctionGenerator(cot_answer, name="canned")
    result = build_probes(
        "cot",
        refs,
        tmp_path / "a.jsonl",
        generator=generator,
        limit=1,
        use_cache=False,
        cache_dir=tmp_path / "c",
    )
    assert (result.n_references, result.n_probes, generator.calls) == (1, 1, 1)
    assert not (tmp_path / "c").exists()
    with pytest.raises(InputError, match="limit: must be at least 1"):
        build_probes("cot", refs, tmp_path / "a.jsonl", generator=generator, limit=0)


def test_identical_prompts_are_asked_once(tmp_path):
    rows = [{"id": i, "prompt": "What is 1 + 1?", "response": "2"} for i in range(3)]
    generator = FunctionGenerator(cot_answer, name="canned")
    result = build_probes(
        "cot",
        _write_jsonl(tmp_path / "r.jsonl", rows),
        tmp_path / "o.jsonl",
        generator=generator,
        use_cache=False,
    )
    assert (generator.calls, result.n_probes) == (1, 3)


def test_clarify_writes_two_files(tmp_path, refs):
    generator = FunctionGenerator(lambda p: "1. Be correct.\n2. Be short.", name="list")
    result = build_probes(
        "clarify", refs, tmp_path / "clar.jsonl", generator=generator, use_cache=False
    )
    assert result.files == {
        "clarified": tmp_path / "clar.jsonl",
        "clarification": tmp_path / "clar.clarification.jsonl",
    }
    clarified = load_examples(tmp_path / "clar.jsonl")
    clarification = load_examples(tmp_path / "clar.clarification.jsonl")
    assert [e.id for e in clarified] == [e.id for e in clarification] == ["add", "cls", "fix"]
    assert clarified[0].response == "42"
    assert clarification[0].response == clarified[0].prompt[-1].content
    kinds = {json.loads(line)["kind"] for line in (tmp_path / "clar.jsonl").open()}
    assert kinds == {"clarified"}


def test_none_generator_reads_answers_from_the_references(tmp_path):
    rows = [
        {**REFERENCES[0], "generation": "17 + 25 = 42.\nFinal answer: 42", "label": "pos"},
        {**REFERENCES[1], "generation": "no final line"},
    ]
    refs = _write_jsonl(tmp_path / "r.jsonl", rows)
    result = build_probes("cot", refs, tmp_path / "o.jsonl")
    assert (result.n_probes, [f.source_id for f in result.failures]) == (1, ["cls"])
    [record] = [json.loads(line) for line in (tmp_path / "o.jsonl").open()]
    assert record["response"] == "17 + 25 = 42.\nSo the final answer is: 42"
    assert record["label"] == "pos"
    config = yaml.safe_load((tmp_path / "o.config.yaml").read_text())
    assert config["generator"] == {"generator": "none", "generation_field": "generation"}

    renamed = [{**REFERENCES[0], "mine": "Because.\nFinal answer: 42"}]
    refs = _write_jsonl(tmp_path / "r2.jsonl", renamed)
    assert build_probes("cot", refs, tmp_path / "o2.jsonl", generation_field="mine").n_probes == 1


def test_none_generator_without_the_field_is_bad_input_and_writes_nothing(tmp_path, refs):
    with pytest.raises(InputError, match=r"refs.jsonl:1: generation: missing"):
        build_probes("cot", refs, tmp_path / "o.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refs.jsonl"]


def test_nothing_parsed_writes_no_probe_file_but_reports(tmp_path, refs):
    generator = FunctionGenerator(lambda p: "no", name="no")
    result = build_probes("cot", refs, tmp_path / "o.jsonl", generator=generator, use_cache=False)
    assert result.files == {} and result.n_probes == 0 and len(result.failures) == 3
    assert not (tmp_path / "o.jsonl").exists()
    assert len(yaml.safe_load(result.config_path.read_text())["failures"]) == 3


def test_custom_strategy_without_generation_needs_no_generator(tmp_path, refs):
    strategy = tmp_path / "conclusion-first.yaml"
    strategy.write_text(
        "name: conclusion-first\n"
        "outputs:\n"
        "  - kind: cf\n"
        "    query: '{{ query }} Answer first, then explain.'\n"
        "    response: '{{ response }}. (Explanation omitted.)'\n"
    )
    result = build_probes(strategy, refs, tmp_path / "cf.jsonl")
    assert result.n_probes == 3
    assert load_examples(tmp_path / "cf.jsonl")[1].response == "positive. (Explanation omitted.)"


def _tiny_run(root: Path) -> None:
    """A tiny base model folder and one random LoRA checkpoint."""
    tokenizer = build_tiny_tokenizer()
    build_tiny_llama(len(tokenizer)).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    torch.manual_seed(1)
    config = LoraConfig(
        r=4, lora_alpha=32, target_modules=["up_proj", "down_proj"], init_lora_weights=False
    )
    adapter = get_peft_model(build_tiny_llama(len(tokenizer)), config)
    adapter.save_pretrained(root / "run" / "checkpoint-10")


def test_probes_feed_a_study_unchanged(tmp_path, refs):
    generator = FunctionGenerator(lambda p: "Because it is.\nFinal answer: x", name="c")
    build_probes("cot", refs, tmp_path / "cot.jsonl", generator=generator, use_cache=False)
    _tiny_run(tmp_path)
    spec = {
        "model": "base",
        "checkpoints": "run",
        "sets": {"refs": {"path": "refs.jsonl"}, "cot": {"path": "cot.jsonl"}},
        "metrics": [
            {"name": "CoT in-task", "probes": "cot", "evals": "refs", "context": "in-task"},
            {"name": "CoT cross-task", "probes": "cot", "evals": "refs", "context": "cross-task"},
        ],
        "dtype": "float64",
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec))

    result = run_study(tmp_path / "study.yaml", tmp_path / "study", progress=False)

    pairs = {row.metric: row.n_pairs for row in result.scores}
    assert pairs == {"CoT in-task": 3, "CoT cross-task": 6}


def test_cli_with_a_stub_openai_server_never_writes_the_key(tmp_path, refs, monkeypatch, capsys):
    monkeypatch.setenv("STUB_KEY", SECRET)

    def script(n, body):
        return 200, completion(cot_answer([_Msg(body["messages"][-1]["content"])])), {}, 0

    out = tmp_path / "cot.jsonl"
    argv = [
        "probes", "--strategy", "cot", "--in", str(refs), "--out", str(out),
        "--generator", "openai", "--model", "stub-model", "--api-key-env", "STUB_KEY",
        "--cache-dir", str(tmp_path / "cache"), "--no-progress",
    ]  # fmt: skip
    with StubServer(script) as server:
        assert main([*argv, "--base-url", server.base_url]) == 0
        assert len(server.chat_requests) == 3
        captured = capsys.readouterr()
        assert main([*argv, "--base-url", server.base_url]) == 0
        assert len(server.chat_requests) == 3  # the rerun asked nothing
    assert f"left out {refs}:2 (id cls)" in captured.err
    assert "wrote 2 cot probes to" in captured.out
    assert "3 cached, 0 generated" in capsys.readouterr().out
    assert server.chat_requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(), path
    config = yaml.safe_load((tmp_path / "cot.config.yaml").read_text())
    assert config["generator"]["base_url"] == server.base_url
    assert config["generator"]["model"] == "stub-model"


class _Msg:
    def __init__(self, content: str) -> None:
        self.content = content


def test_cli_server_failure_exits_1_and_says_to_rerun(tmp_path, refs, capsys):
    def script(n, body):
        return 500, {"error": {"message": "boom"}}, {}, 0

    with StubServer(script) as server:
        status = main([
            "probes", "--strategy", "cot", "--in", str(refs), "--out", str(tmp_path / "o.jsonl"),
            "--generator", "openai", "--base-url", server.base_url, "--model", "m",
            "--max-retries", "0", "--no-cache", "--no-progress",
        ])  # fmt: skip
    assert status == 1
    err = capsys.readouterr().err
    assert "HTTP 500" in err and "rerun to resume" in err
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "cots"], "swiftstudy: error: strategy: unknown strategy 'cots'"),
        (["--in", "missing.jsonl"], "missing.jsonl: no such file or directory"),
        (["--generator", "hf", "--base-url", "http://x"], "--base-url: applies to --generator"),
        (["--generator", "none", "--batch-size", "2"], "--batch-size: applies to --generator hf"),
        (["--generator", "hf", "--max-new-tokens", "0"], "--max-new-tokens: must be at least 1"),
        (["--limit", "0"], "limit: must be at least 1"),
        ([], "refs.jsonl:1: generation: missing"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path, refs, monkeypatch, capsys, args, message
):
    monkeypatch.chdir(tmp_path)
    base = {"--strategy": "cot", "--in": "refs.jsonl", "--out": "o.jsonl", "--generator": "none"}
    for option, value in zip(args[::2], args[1::2], strict=True):
        base[option] = value
    argv = ["probes", *[part for item in base.items() for part in item]]

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refs.jsonl"]


def test_output_that_is_the_input_is_refused(tmp_path, refs):
    with pytest.raises(InputError, match=r"refs.jsonl: out: is also the input"):
        build_probes("cot", refs, refs)


def test_references_from_a_saved_dataset_split(tmp_path):
    import datasets

    rows = [{**r, "generation": "Because.\nFinal answer: x"} for r in REFERENCES[:2]]
    table = datasets.Dataset.from_list(rows)
    datasets.DatasetDict({"train": table}).save_to_disk(str(tmp_path / "refs"))

    result = build_probes("cot", tmp_path / "refs", tmp_path / "o.jsonl", split="train")

    assert [e.id for e in load_examples(tmp_path / "o.jsonl")] == ["add", "cls"]
    config = yaml.safe_load(result.config_path.read_text())
    assert config["input"]["split"] == "train" and config["input"]["sha256"] is None


def test_config_records_the_device_a_local_model_answered_on(tmp_path, refs):
    tokenizer = build_tiny_tokenizer()
    build_tiny_llama(len(tokenizer), seed=0).save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    settings = HFSettings(model=str(tmp_path / "tiny"), max_new_tokens=3, device="auto")

    first = build_probes(
        "cot", refs, tmp_path / "a.jsonl", generator=HFGenerator(settings), cache_dir=tmp_path / "c"
    )
    generator = yaml.safe_load(first.config_path.read_text())["generator"]
    assert generator["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert generator["model"] == str(tmp_path / "tiny")

    # Every answer from the cache: no model loads, so no device is claimed.
    again = build_probes(
        "cot", refs, tmp_path / "b.jsonl", generator=HFGenerator(settings), cache_dir=tmp_path / "c"
    )
    assert again.n_generated == 0
    assert "device" not in yaml.safe_load(again.config_path.read_text())["generator"]
