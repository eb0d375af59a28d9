"""The base run: LoRA (or full) SFT on completion tokens that writes the checkpoint series a study
traces, with the Hugging Face Trainer (so ``torchrun`` / ``accelerate launch`` work unchanged)."""

from swiftstudy.train.run import TrainResult, run_training
from swiftstudy.train.spec import (
    DataSource,
    LoraSpec,
    TrainSpec,
    load_train_spec,
    train_spec_from_dict,
)

__all__ = [
    "DataSource",
    "LoraSpec",
    "TrainResult",
    "TrainSpec",
    "load_train_spec",
    "run_training",
    "train_spec_from_dict",
]
