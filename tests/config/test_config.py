"""The spec layer itself: option fields, the one reader and writer, --print-config, probes flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from swiftstudy.cli.main import main
from swiftstudy.config import (
    Spec,
    describe_spec,
    device,
    from_dict,
    load_spec,
    nested,
    option,
    torch_dtype,
)
from swiftstudy.config.probes import describe_flag, probes_spec_from_flags
from swiftstudy.errors import InputError


@dataclass(frozen=True)
class _Inner(Spec):
    path: Path = option(doc="A file.")
    split: str | None = option(None, "A split.", omit_default=True)


@dataclass(frozen=True)
class _Toy(Spec):
    name: str = option(doc="The name.")
    label: str = option(doc="Derived.", fill=lambda reader: reader.lookup("name"))
    batch_size: int = option(8, "Examples per batch.", min=1)
    inner: _Inner | None = option(None, "A nested section.", check=nested(_Inner, shorthand="path"))
    device: str = option("cpu", "Where.", check=device())
    spec_path: Path | None = field(default=None, compare=False)


@dataclass(frozen=True)
class _Aliased(Spec):
    unsupported_keys: ClassVar[dict[str, str]] = {"warmup_ratio": "set warmup_steps instead"}

    lr: float = option(1.0, "The rate.", aliases=("learning_rate", "eta"))
    warmup_steps: int = option(0, "Warm-up.", min=0)
    inner: _Inner | None = option(None, "A nested section.", check=nested(_Inner))


def _load(tmp_path: Path, text: str, overrides=(), cls: type = _Toy):
    spec = tmp_path / "toy.yaml"
    spec.write_text(text, encoding="utf-8")
    return load_spec(cls, spec, overrides)


def test_defaults_fill_nested_shorthand_and_resolved_dict(tmp_path):
    toy = _load(tmp_path, "name: a\ninner: data.jsonl\n")
    assert toy == _Toy("a", "a", 8, _Inner(tmp_path / "data.jsonl"), "cpu")
    assert toy.spec_path == tmp_path / "toy.yaml"
    data = toy.to_dict()
    assert data == {
        "name": "a",
        "label": "a",
        "batch_size": 8,
        "inner": {"path": str(tmp_path / "data.jsonl")},  # split left out at its default
        "device": "cpu",
    }
    assert from_dict(_Toy, data, base_dir=tmp_path / "elsewhere") == toy


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: a\nbatchsize: 4\n",
            ":2: batchsize: unknown key 'batchsize': did you mean 'batch_size'?",
        ),
        (
            "name: a\ninner: {path: x, splt: t}\n",
            ":2: inner.splt: unknown key 'splt': did you mean 'split'?",
        ),
        (
            "name: a\nzzz: 1\n",
            ":2: zzz: unknown key 'zzz': expected one of name, label, batch_size, inner, device",
        ),
        ("batch_size: 2\n", ":1: name: missing required key 'name'"),
        ("name: a\nbatch_size: 0\n", ":2: batch_size: must be at least 1, got 0"),
        ("name: a\ninner: 3\n", ":2: inner: expected a mapping {path, split}, got an integer (3)"),
        (
            "name: a\ndevice: tpu\n",
            ":2: device: unknown device 'tpu' (expected cpu, cuda, cuda:N or auto)",
        ),
    ],
)
def test_errors_name_file_line_key_and_suggest(tmp_path, text, expected):
    with pytest.raises(InputError) as info:
        _load(tmp_path, text)
    assert str(info.value) == f"{tmp_path / 'toy.yaml'}{expected}"


def test_an_override_is_blamed_on_the_command_line(tmp_path):
    with pytest.raises(InputError) as info:
        _load(tmp_path, "name: a\n", ["inner.path=x", "batch_size=-1"])
    assert info.value.key == "batch_size" and info.value.line is None
    assert info.value.message.endswith("(set by a command-line override)")
    assert _load(tmp_path, "name: a\n", ["device=cuda:3"]).device == "cuda:3"


def test_an_alias_names_the_same_key(tmp_path):
    spec = _load(tmp_path, "learning_rate: 0.5\n", cls=_Aliased)
    assert spec == _Aliased(lr=0.5)
    assert spec.to_dict() == {"lr": 0.5, "warmup_steps": 0, "inner": None}  # our name, written
    assert _load(tmp_path, "eta: 2\n", cls=_Aliased).lr == 2
    # An override replaces the file's other spelling of the key, as a plain override would.
    assert _load(tmp_path, "lr: 0.5\n", ["learning_rate=3"], cls=_Aliased).lr == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # errors name the key as written
            "learning_rate: -1\n",
            ":1: learning_rate: must be at least 0, got -1",
        ),
        (
            "lr: 1\nlearning_rate: 2\n",
            ":2: learning_rate: 'lr' and 'learning_rate' name the same key: give one of them",
        ),
        (
            "eta: 1\nlearning_rate: 2\n",
            ":2: learning_rate: 'eta' and 'learning_rate' name the same key: give one of them",
        ),
        (  # a near miss of an alias
            "learning_rte: 1\n",
            ":1: learning_rte: unknown key 'learning_rte': did you mean 'learning_rate'?",
        ),
        (  # a key another tool has and we do not: what to do instead
            "warmup_ratio: 0.1\n",
            ":1: warmup_ratio: unknown key 'warmup_ratio': set warmup_steps instead",
        ),
        (  # a section's key written one level up
            "split: train\n",
            ":1: split: unknown key 'split': did you mean 'inner.split'?",
        ),
    ],
)
def test_alias_errors(tmp_path, text, expected):
    with pytest.raises(InputError) as info:
        _load(tmp_path, text, cls=_Aliased)
    assert str(info.value) == f"{tmp_path / 'toy.yaml'}{expected}"


def test_both_spellings_by_overrides_are_refused(tmp_path):
    with pytest.raises(InputError, match="'lr' and 'eta' name the same key") as info:
        _load(tmp_path, "warmup_steps: 1\n", ["lr=1", "eta=2"], cls=_Aliased)
    assert info.value.key == "eta" and info.value.line is None


def test_describe_lists_every_key_with_default_and_doc():
    lines = describe_spec(_Toy).splitlines()
    keys = ["name", "label", "batch_size", "inner", "inner.path", "inner.split", "device"]
    assert [line.split()[0] for line in lines] == keys  # a section's keys follow it
    assert lines[2].split() == ["batch_size", "8", "Examples", "per", "batch."]
    assert lines[0].split()[1] == "(required)" and lines[1].split()[1] == "(derived)"
    assert lines[5].split()[:2] == ["inner.split", "null"]
    assert describe_spec(_Aliased).splitlines()[0].split() == [
        "lr",
        "1.0",
        "The",
        "rate.",
        "(also:",
        "learning_rate,",
        "eta)",
    ]


def test_torch_dtype_is_the_one_map():
    import torch

    assert torch_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be one of float32"):
        torch_dtype("float8")


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (
            "study",
            [
                "max_length  ",
                "2048",
                "Longest tokenized",
                "sets.<name>.format",
                "verdict.checkpoints",
                "revision ",
                "trust_remote_code ",
                "attn_implementation ",
                "auto (a GPU if any)",
            ],
        ),
        (
            "train",
            [
                "lora.r ",
                "64",
                "The rank.",
                "data[].split",
                "device    ",
                "lora.alpha ",
                "(also: lora_alpha)",
                "(also: learning_rate)",
                "(also: per_device_train_batch_size)",
                "report_to ",
                "revision ",
                "trust_remote_code ",
                "attn_implementation ",
            ],
        ),
        ("validate", ["eval.evaluator.api_key_env", "OPENAI_API_KEY", "quick.max_steps", "train "]),
        (
            "probes",
            [
                "--in ",
                "(required)",
                "--timeout (openai)",
                "120.0",
                "--threads (hf)",
                "--revision (hf)",
                "--trust-remote-code (hf)",
                "--attn-implementation (hf)",
            ],
        ),
    ],
)
def test_print_config_shows_every_key_from_the_spec(command, shown, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--print-config"])  # no spec file or --out needed
    assert info.value.code == 0
    out = capsys.readouterr().out
    for text in shown:
        assert text in out, text
    assert all(len(line.split()) >= 2 for line in out.splitlines())


def test_probes_flags_build_the_chosen_generators_settings():
    base = {"strategy": "cot", "in": "refs.jsonl", "out": "o.jsonl"}
    spec = probes_spec_from_flags({**base, "generator": "hf", "model": "tiny", "threads": 1})
    assert (spec.settings.model, spec.settings.threads, spec.settings.device) == ("tiny", 1, "auto")
    flags = {"revision": "v2", "trust_remote_code": True, "attn_implementation": "sdpa"}
    spec = probes_spec_from_flags({**base, "generator": "hf", "model": "org/m", **flags})
    assert (spec.settings.revision, spec.settings.trust_remote_code) == ("v2", True)
    assert spec.settings.attn_implementation == "sdpa"
    spec = probes_spec_from_flags({**base, "generator": "openai", "timeout_s": 5.0, "seed": 3})
    assert (spec.settings.timeout_s, spec.settings.seed, spec.hf.model) == (5.0, 3, "smollm2")
    assert probes_spec_from_flags({**base, "generator": "none"}).settings is None
    assert describe_flag(("openai", "timeout_s")) == "--timeout (openai)"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {"generator": "hf", "base_url": "http://x"},
            "--base-url: applies to --generator openai only",
        ),
        ({"generator": "none", "model": "m"}, "--model: applies to --generator openai or hf only"),
        (
            {"generator": "openai", "generation_field": "g"},
            "--generation-field: applies to --generator none only",
        ),
        ({"generator": "openai", "timeout_s": 0.0}, "--timeout: must be positive, got 0.0"),
        ({"generator": "openai", "max_retries": -1}, "--max-retries: must be at least 0, got -1"),
        (
            {"generator": "hf", "device": "gpu"},
            "--device: unknown device 'gpu' (expected cpu, cuda, cuda:N or auto)",
        ),
        (
            {"generator": "hf", "model": "smollm2", "revision": "v1"},
            "--revision: applies to a Hub id, not to the bundled model: smollm2",
        ),
        ({"generator": "hf", "dtype": "float8"}, "--dtype: unknown value 'float8'"),
        ({"generator": "none", "limit": 0}, "--limit: must be at least 1, got 0"),
    ],
)
def test_probes_spec_errors_name_the_flag(flags, message):
    base = {"strategy": "cot", "in": "refs.jsonl", "out": "o.jsonl"}
    with pytest.raises(InputError) as info:
        probes_spec_from_flags({**base, **flags})
    assert str(info.value).startswith(message)
    assert info.value.path is None and info.value.line is None
