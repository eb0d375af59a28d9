"""The run folder: refusing to mix runs in it, its resolved config, and reading back its series.

``--out`` holds ``train_config.yaml`` (the resolved spec, the SHA-256 of each data source and
provenance) and the Trainer's ``checkpoint-<step>/`` folders. A folder holding a run of another
config, or other files, is refused unless the caller overwrites it; a run of the same config is
continued only when the caller asks to resume.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from swiftstudy.constants import CHECKPOINT_PREFIX, TRAIN_CONFIG_YAML, TRAINER_STATE
from swiftstudy.errors import InputError
from swiftstudy.fileio import read_json
from swiftstudy.rundir import claim_run_folder
from swiftstudy.train.spec import TrainSpec

logger = logging.getLogger(__name__)


def check_out_dir(
    out_dir: Path, spec: TrainSpec, hashes: list[str | None], *, resume: bool, overwrite: bool
) -> Path | None:
    """Refuse to mix runs in ``out_dir``; return the checkpoint to resume from, if any.

    Args:
        out_dir: The run folder (it may not exist yet).
        spec: The run's spec, compared with the saved one.
        hashes: The SHA-256 of each data source, compared with the saved ones.
        resume: Continue the run of the same config that ``out_dir`` holds.
        overwrite: Accept any content (the caller deletes the old run before writing).

    Returns:
        The newest complete checkpoint when resuming one, else ``None`` (start afresh).

    Raises:
        InputError: ``out_dir`` is a file, holds other files or a run of another config, or
            already holds checkpoints of this run and ``resume`` is not set.
    """
    identity = {"spec": spec.to_dict(), "data_sha256": hashes}
    saved = claim_run_folder(
        out_dir,
        TRAIN_CONFIG_YAML,
        identity,
        what="train",
        overwrite=overwrite,
        require_config=True,
    )
    if saved is None:
        if resume:
            logger.info("%s holds no run to resume: starting afresh", out_dir)
        return None
    newest = _newest_checkpoint(out_dir)
    if not resume and newest is not None:
        raise InputError(
            f"already holds checkpoints of this run (up to {newest.name}); "
            "use --resume to continue it, or --overwrite to start again",
            path=out_dir,
            key="--out",
        )
    if resume and newest is None:
        logger.info("%s has no complete checkpoint yet: starting afresh", out_dir)
    return newest


def _newest_checkpoint(out_dir: Path) -> Path | None:
    """The highest-step ``checkpoint-<step>`` whose save finished (trainer state written last)."""
    complete = [
        (int(child.name[len(CHECKPOINT_PREFIX) :]), child)
        for child in out_dir.glob(f"{CHECKPOINT_PREFIX}*")
        if child.name[len(CHECKPOINT_PREFIX) :].isdigit() and (child / TRAINER_STATE).is_file()
    ]
    return max(complete)[1] if complete else None


def read_trainer_state(folder: Path) -> dict:
    """The ``trainer_state.json`` of a checkpoint, as a dict."""
    state = read_json(folder / TRAINER_STATE)
    return state if isinstance(state, dict) else {}


def is_finished(checkpoint: Path) -> bool:
    """Whether a checkpoint was saved at the run's last step."""
    state = read_trainer_state(checkpoint)
    step, total = state.get("global_step"), state.get("max_steps")
    return isinstance(step, int) and isinstance(total, int) and 0 < total <= step


def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Create ``out_dir``; with ``overwrite``, first delete the previous run's files."""
    if overwrite and out_dir.is_dir():
        for child in out_dir.glob(f"{CHECKPOINT_PREFIX}*"):
            if child.is_dir():
                shutil.rmtree(child)
        (out_dir / TRAIN_CONFIG_YAML).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
