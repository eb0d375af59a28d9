"""Checkpoint series: find the saved states of a training run on disk, and fingerprint them.

A series is either a Hugging Face Trainer output folder (``checkpoint-<step>/`` sub-folders), a
single saved model or adapter folder, or an explicit list of ``{path, step}`` entries from a
config file. Each state is a LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``)
or a full model (``config.json`` + ``*.safetensors``); a series never mixes the two. Only
safetensors are accepted: pickled ``.bin`` weights can run code when loaded.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from swiftstudy.constants import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    CHECKPOINT_KIND_ADAPTER,
    CHECKPOINT_KIND_FULL,
    CHECKPOINT_PREFIX,
    MODEL_CONFIG,
    TRAINER_STATE,
)
from swiftstudy.errors import InputError
from swiftstudy.fileio import read_json, sha256_hex

logger = logging.getLogger(__name__)

_CHECKPOINT_DIR = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}(\d+)$")
_SAFETENSORS_INDEX = "model.safetensors.index.json"
_ENTRY_KEYS = frozenset({"path", "step"})


@dataclass(frozen=True)
class Checkpoint:
    """One saved state of a training run.

    Attributes:
        path: The folder holding the weights.
        step: The optimizer step the state was saved at.
        kind: ``"adapter"`` (a PEFT LoRA adapter) or ``"full"`` (a complete model).
    """

    path: Path
    step: int
    kind: str


def discover_checkpoints(
    source: str | Path | list[dict],
    *,
    base_dir: Path | None = None,
    origin: str = "checkpoints",
) -> list[Checkpoint]:
    """Find the checkpoints of a training run, sorted by step.

    Args:
        source: A Trainer output folder holding ``checkpoint-<step>/`` folders, a single adapter or
            model folder, or a list of ``{"path": ..., "step": ...}`` entries (``step`` optional:
            taken from a ``checkpoint-<step>`` name or ``trainer_state.json``).
        base_dir: The folder relative paths are resolved against (the config file's folder);
            the current directory if ``None``.
        origin: The config key ``source`` came from, used in error messages.

    Returns:
        The checkpoints, sorted by step, all of one kind.

    Raises:
        InputError: A path is missing, a folder is neither layout, weights are missing or not
            safetensors, a step is missing or repeated, or adapters and full models are mixed.
    """
    if isinstance(source, list):
        checkpoints = [
            _checkpoint_from_entry(entry, base_dir=base_dir, key=f"{origin}[{i}]")
            for i, entry in enumerate(source)
        ]
        if not checkpoints:
            raise InputError("the checkpoint list is empty", key=origin)
    elif isinstance(source, (str, Path)):
        checkpoints = _checkpoints_from_dir(_resolve(source, base_dir), key=origin)
    else:
        raise InputError(
            f"expected a folder or a list of {{path, step}} entries, got {type(source).__name__}",
            key=origin,
        )
    checkpoints.sort(key=lambda c: c.step)
    _check_series(checkpoints, key=origin)
    logger.info(
        "found %d %s checkpoint(s), steps %s",
        len(checkpoints),
        checkpoints[0].kind,
        [c.step for c in checkpoints],
    )
    return checkpoints


def hash_checkpoint(ckpt: Checkpoint) -> str:
    """Fingerprint a checkpoint's weights and config, for caching and provenance.

    The hash covers the weight and config files only (not tokenizer, optimizer or trainer state),
    each as its name followed by its bytes, in sorted name order, so it is stable across copies.

    Args:
        ckpt: The checkpoint to hash.

    Returns:
        The SHA-256 hex digest.
    """
    parts: list[str | bytes | Path] = []
    for file in sorted(_state_files(ckpt), key=lambda p: p.name):
        parts += [f"{file.name}\0", file.stat().st_size.to_bytes(8, "little"), file]
    return sha256_hex(*parts)


def _state_files(ckpt: Checkpoint) -> list[Path]:
    """The files that define a checkpoint's state: its config(s) and weights."""
    if ckpt.kind == CHECKPOINT_KIND_ADAPTER:
        return [ckpt.path / ADAPTER_CONFIG, ckpt.path / ADAPTER_WEIGHTS]
    files = [ckpt.path / MODEL_CONFIG, *ckpt.path.glob("*.safetensors")]
    index = ckpt.path / _SAFETENSORS_INDEX
    if index.is_file():
        files.append(index)
    return files


def _resolve(path: str | Path, base_dir: Path | None) -> Path:
    """Expand ``~`` and resolve a relative path against ``base_dir`` (an absolute one is kept)."""
    return Path(base_dir or ".") / Path(path).expanduser()


def _checkpoints_from_dir(root: Path, *, key: str) -> list[Checkpoint]:
    """The checkpoints of a Trainer output folder, or the folder itself as a single state."""
    if not root.exists():
        raise InputError("no such folder", path=root, key=key)
    if not root.is_dir():
        raise InputError("expected a folder of checkpoints, got a file", path=root, key=key)
    subdirs = [
        (int(match.group(1)), child)
        for child in root.iterdir()
        if child.is_dir() and (match := _CHECKPOINT_DIR.match(child.name))
    ]
    if subdirs:
        return [Checkpoint(child, step, _detect_kind(child, key=key)) for step, child in subdirs]
    kind = _detect_kind(root, key=key, hint=f" and no {CHECKPOINT_PREFIX}<step> folders")
    step = _step_from_trainer_state(root, key=key)
    return [Checkpoint(root, 0 if step is None else step, kind)]


def _checkpoint_from_entry(entry: object, *, base_dir: Path | None, key: str) -> Checkpoint:
    """One checkpoint from a ``{path, step}`` entry of an explicit list."""
    if not isinstance(entry, Mapping):
        raise InputError(f"expected a {{path, step}} mapping, got {type(entry).__name__}", key=key)
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise InputError(f"unknown key(s) {unknown}; expected path and step", key=key)
    raw_path = entry.get("path")
    if not isinstance(raw_path, (str, Path)) or not str(raw_path):
        raise InputError("a checkpoint path is required", key=f"{key}.path")
    path = _resolve(raw_path, base_dir)
    if not path.is_dir():
        what = "no such folder" if not path.exists() else "expected a checkpoint folder"
        raise InputError(what, path=path, key=f"{key}.path")
    kind = _detect_kind(path, key=f"{key}.path")
    step = entry.get("step")
    if step is None:
        step = _step_from_name_or_state(path, key=key)
    elif isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InputError(f"step must be a non-negative integer, got {step!r}", key=f"{key}.step")
    return Checkpoint(path, step, kind)


def _step_from_name_or_state(path: Path, *, key: str) -> int:
    """A checkpoint's step from its ``checkpoint-<step>`` name, else from ``trainer_state.json``."""
    match = _CHECKPOINT_DIR.match(path.name)
    if match:
        return int(match.group(1))
    step = _step_from_trainer_state(path, key=key)
    if step is None:
        raise InputError(
            f"cannot tell the step: the folder is not named {CHECKPOINT_PREFIX}<step> and has "
            f"no {TRAINER_STATE}; give step explicitly",
            path=path,
            key=f"{key}.step",
        )
    return step


def _step_from_trainer_state(path: Path, *, key: str) -> int | None:
    """``global_step`` from the folder's ``trainer_state.json``, or ``None`` if there is none."""
    state_file = path / TRAINER_STATE
    if not state_file.is_file():
        return None
    state = read_json(state_file, key=key)
    step = state.get("global_step") if isinstance(state, dict) else None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InputError(
            f"expected a non-negative integer, got {step!r}", path=state_file, key="global_step"
        )
    return step


def _detect_kind(path: Path, *, key: str, hint: str = "") -> str:
    """Whether a folder holds an adapter or a full model (``hint`` ends the message if neither)."""
    if (path / ADAPTER_CONFIG).is_file():
        if (path / ADAPTER_WEIGHTS).is_file():
            return CHECKPOINT_KIND_ADAPTER
        _refuse_missing_weights(path, key=key, expected=ADAPTER_WEIGHTS)
    if (path / MODEL_CONFIG).is_file():
        if any(path.glob("*.safetensors")):
            return CHECKPOINT_KIND_FULL
        _refuse_missing_weights(path, key=key, expected="*.safetensors")
    raise InputError(
        f"not a checkpoint: no {ADAPTER_CONFIG} (LoRA adapter) or {MODEL_CONFIG} (full model)"
        + hint,
        path=path,
        key=key,
    )


def _refuse_missing_weights(path: Path, *, key: str, expected: str) -> NoReturn:
    """Raise for a checkpoint folder with a config but no safetensors weights."""
    if any(path.glob("*.bin")):
        raise InputError(
            f"only pickled .bin weights found; safetensors ({expected}) are required "
            "(save with safe_serialization=True)",
            path=path,
            key=key,
        )
    raise InputError(f"checkpoint has no weights ({expected})", path=path, key=key)


def _check_series(checkpoints: list[Checkpoint], *, key: str) -> None:
    """Refuse repeated steps and mixed adapter / full checkpoints in one (sorted) series."""
    for previous, current in itertools.pairwise(checkpoints):
        if previous.step == current.step:
            raise InputError(
                f"step {current.step} appears twice ({previous.path} and {current.path})",
                path=current.path,
                key=key,
            )
    kinds = {c.kind for c in checkpoints}
    if len(kinds) > 1:
        first = {kind: next(c for c in checkpoints if c.kind == kind) for kind in sorted(kinds)}
        raise InputError(
            "a series cannot mix LoRA adapters and full models: "
            + ", ".join(f"{kind} at {c.path}" for kind, c in first.items()),
            key=key,
        )


def load_learning_rate_log(ckpt: Checkpoint) -> list[tuple[int, float]] | None:
    """The ``(step, learning_rate)`` entries of a checkpoint's ``trainer_state.json``.

    The Trainer logs the learning rate of the step just taken in each ``log_history`` entry that
    carries a training loss; entries without ``learning_rate`` (evaluation, the final summary)
    are skipped.

    Returns:
        The entries in file order, or None when the folder has no ``trainer_state.json``.

    Raises:
        InputError: The file is not JSON, or an entry's step or learning rate is not a number.
    """
    state_file = ckpt.path / TRAINER_STATE
    if not state_file.is_file():
        return None
    state = read_json(state_file)
    history = state.get("log_history", []) if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise InputError("expected a list", path=state_file, key="log_history")
    entries = []
    for index, entry in enumerate(history):
        if not isinstance(entry, dict) or "learning_rate" not in entry:
            continue
        step, rate = entry.get("step"), entry["learning_rate"]
        # JSON gives exact types: no bool (an int subclass) passes as a step or a rate.
        if type(step) is not int or type(rate) not in (int, float):
            raise InputError(
                f"expected an integer step and a number, got {step!r} and {rate!r}",
                path=state_file,
                key=f"log_history[{index}]",
            )
        entries.append((step, float(rate)))
    return entries
