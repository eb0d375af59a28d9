"""Models: load the base model, find a run's checkpoints, and put the model in each one's state.

``load_base_model`` reads the bundled SmolLM2, a ``.gguf`` file, a local folder or a hub id (with
``LoadOptions``: revision, remote code, attention kernel; ``resolve_device`` for ``auto``);
``discover_checkpoints`` turns a Trainer output folder or an explicit list into a sorted series;
``ModelStates`` applies each checkpoint to the base model and names the gradient targets;
``load_adam_moments`` reads a checkpoint's optimizer state for Adam preconditioning.
"""

from swiftstudy.model.checkpoints import (
    Checkpoint,
    discover_checkpoints,
    hash_checkpoint,
    load_learning_rate_log,
)
from swiftstudy.model.loading import (
    LoadOptions,
    bundled_gguf_path,
    default_cache_dir,
    load_base_model,
    load_checkpoint_tokenizer,
    model_folder,
    resolve_device,
)
from swiftstudy.model.memory import (
    GradientWorkload,
    MemoryPlan,
    ModelShape,
    choose_batch_tokens,
    plan_memory,
    render_memory_plan,
)
from swiftstudy.model.optimizer import AdamMoments, load_adam_moments, trainer_parameter_order
from swiftstudy.model.states import ModelStates, TargetModule, find_targets

__all__ = [
    "AdamMoments",
    "Checkpoint",
    "GradientWorkload",
    "LoadOptions",
    "MemoryPlan",
    "ModelShape",
    "ModelStates",
    "TargetModule",
    "bundled_gguf_path",
    "choose_batch_tokens",
    "default_cache_dir",
    "discover_checkpoints",
    "find_targets",
    "hash_checkpoint",
    "load_adam_moments",
    "load_base_model",
    "load_checkpoint_tokenizer",
    "load_learning_rate_log",
    "model_folder",
    "plan_memory",
    "render_memory_plan",
    "resolve_device",
    "trainer_parameter_order",
]
