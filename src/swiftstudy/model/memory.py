"""A memory plan for a study: model weights, the engine's activations per batch, kept gradients.

Bytes on the study's device, for a Llama-style decoder with LoRA on some of its Linear layers:

    peak = weights + kept gradients + max(activations of one batch, dot products)

* weights = n_params · s + LoRA params · 4 (PEFT keeps adapters in float32), s the dtype's bytes.
* kept gradients = n_kept · D · 4, D the gradient dimension (k when projected to k).
* dot products = n_examples · n_kept · 8 (float64) plus the float64 column chunks that
  ``compute_dot_products`` converts at a time (of all kept rows, and of one batch of probes when
  they are streamed against the kept eval gradients).
* activations of a batch of N padded tokens and B examples, following the engine (see
  ``gradients/engine.py``): records + max(saved + logits, output grads + products + B · D · 4).
  The forward hooks *record* each LoRA layer's input and output: per token and target,
  4 · (in + r + out) bytes. Autograd *saves*, from the first LoRA output on, what the backward
  needs with no weight requiring a gradient: per layer two RMSNorm float32 inputs (8h), q, k, v and
  the output of SDPA (4sh, keys and values repeated to all heads), the MLP's gate, activation and up
  outputs (3sf); the first layer only its activation (sf). The scored positions' *logits* (s · V),
  their float32 copy and log-softmax (8V). autograd.grad returns every LoRA output's gradient
  (4 · (r + out) per token and target), then each layer's per-example *product* is formed in
  float32 (4N · (in + out) + 4B · in · out at most).

Exact: weights, kept gradients and dot products (the tensors' sizes). An estimate: activations,
which assume SDPA attention (eager attention adds the B × heads × T² score matrices), every token
scored (an upper bound) and batches of at most ``batch_examples`` examples; tests hold the estimate
to within a factor band of a measured peak.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from swiftstudy.constants import DOT_CHUNK_COLUMNS
from swiftstudy.errors import InputError

#: Bytes of a LoRA weight or gradient element: float32 whatever the model's dtype.
_FLOAT32 = 4
_FLOAT64 = 8
#: Largest batch token budget :func:`choose_batch_tokens` considers.
MAX_BATCH_TOKENS = 1 << 20
_GIB = 1 << 30


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Llama-style decoder that its memory depends on.

    Attributes:
        hidden_size: h.
        intermediate_size: f, the MLP width.
        num_layers: Decoder layers.
        vocab_size: V.
        n_params: Parameters of the base model (embeddings and LM head included, tied once).
        dtype_bytes: s, bytes per weight: 2 for bf16 / fp16, 4 for float32.
        kv_size: Width of the k / v projections; ``hidden_size`` when ``None`` (no GQA).
    """

    hidden_size: int
    intermediate_size: int
    num_layers: int
    vocab_size: int
    n_params: int
    dtype_bytes: int = 2
    kv_size: int | None = None

    @classmethod
    def from_config(cls, config: Any, n_params: int, dtype_bytes: int) -> ModelShape:
        """The shape of a Hugging Face ``LlamaConfig``-like config."""
        heads = getattr(config, "num_attention_heads", None)
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        kv_size = None if heads is None else config.hidden_size * kv_heads // heads
        return cls(
            config.hidden_size,
            config.intermediate_size,
            config.num_hidden_layers,
            config.vocab_size,
            n_params,
            dtype_bytes,
            kv_size,
        )

    def linear_features(self, name: str) -> tuple[int, int]:
        """``(in, out)`` of a Llama Linear layer by its name (``up_proj``, ``q_proj``, ...)."""
        h, f = self.hidden_size, self.intermediate_size
        kv = h if self.kv_size is None else self.kv_size
        shapes = {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, f),
            "up_proj": (h, f),
            "down_proj": (f, h),
        }
        if name not in shapes:
            raise InputError(f"unknown Llama layer {name!r}; known: {sorted(shapes)}", key=name)
        return shapes[name]


@dataclass(frozen=True)
class GradientWorkload:
    """What a study computes and keeps.

    Attributes:
        n_examples: Unique examples whose gradients are computed at a checkpoint.
        rank: LoRA rank r.
        targets: The Linear layers (of every decoder layer) LoRA adapts.
        batch_examples: Most examples in one batch (the study's ``batch_size``).
        n_kept: Examples whose gradients stay in memory: ``n_examples`` when ``None`` (the
            default: all, then their Gram matrix); the eval sets' size when probes are streamed.
        projection_dim: k when gradients are randomly projected to k dimensions, else ``None``.
    """

    n_examples: int
    rank: int = 64
    targets: tuple[str, ...] = ("up_proj", "down_proj")
    batch_examples: int = 8
    n_kept: int | None = None
    projection_dim: int | None = None


@dataclass(frozen=True)
class ActivationEstimate:
    """Bytes of one batch's working memory in the engine (see the module docstring).

    Attributes:
        records: The forward hooks' records of every LoRA layer's input and output.
        autograd_saved: What autograd saves for the backward, from the first LoRA output on.
        logits: The scored positions' logits, their float32 copy and log-softmax.
        output_grads: The gradient of every LoRA output, as ``autograd.grad`` returns them.
        products: The per-example products of one layer, formed in float32.
        batch_gradients: The batch's per-example gradients, B · D · 4.
    """

    records: int
    autograd_saved: int
    logits: int
    output_grads: int
    products: int
    batch_gradients: int

    @property
    def total(self) -> int:
        """The batch's peak: records plus the larger of its forward and its gradient phase."""
        forward = self.autograd_saved + self.logits
        gradient = self.output_grads + self.products + self.batch_gradients
        return self.records + max(forward, gradient)


@dataclass(frozen=True)
class MemoryPlan:
    """Estimated device memory of a study at one checkpoint, in bytes.

    Attributes:
        batch_tokens: Padded tokens per batch the plan assumes.
        batch_examples: Examples per batch it assumes (at most).
        lora_params: Parameters of the adapter, the length of one per-example gradient.
        kept_dim: Length of a kept gradient row (``projection_dim`` when projecting).
        weights: Model and adapter weights.
        activations: One batch's working memory.
        kept_gradients: The per-example gradients held until the dot products.
        dot_products: The float64 dot products and the chunks converted to compute them.
    """

    batch_tokens: int
    batch_examples: int
    lora_params: int
    kept_dim: int
    weights: int
    activations: ActivationEstimate
    kept_gradients: int
    dot_products: int

    @property
    def peak(self) -> int:
        """Weights + kept gradients + the larger of a batch's activations and the dot products."""
        return self.weights + self.kept_gradients + max(self.activations.total, self.dot_products)


def plan_memory(model: ModelShape, workload: GradientWorkload, batch_tokens: int) -> MemoryPlan:
    """Estimate the memory of computing and keeping the workload's gradients.

    Args:
        model: The base model's sizes and weight dtype.
        workload: LoRA settings, example counts and what is kept.
        batch_tokens: Padded tokens per batch (the study's ``batch_tokens``).

    Returns:
        The plan; its ``peak`` is the number to compare with the device's memory.
    """
    if batch_tokens < 1 or workload.n_examples < 1 or workload.rank < 1:
        raise ValueError("batch_tokens, n_examples and rank must be >= 1")
    features = [model.linear_features(name) for name in workload.targets]
    lora_params = model.num_layers * sum(workload.rank * (i + o) for i, o in features)
    kept_dim = workload.projection_dim or lora_params
    batch_examples = min(workload.batch_examples, batch_tokens)
    kept = workload.n_examples if workload.n_kept is None else workload.n_kept
    chunk = min(DOT_CHUNK_COLUMNS, kept_dim)
    # All kept: their Gram matrix. Streamed: each batch of probes against the kept gradients.
    chunk_rows = kept if kept == workload.n_examples else kept + batch_examples
    return MemoryPlan(
        batch_tokens=batch_tokens,
        batch_examples=batch_examples,
        lora_params=lora_params,
        kept_dim=kept_dim,
        weights=model.n_params * model.dtype_bytes + lora_params * _FLOAT32,
        activations=_activations(model, workload, batch_tokens, batch_examples, lora_params),
        kept_gradients=kept * kept_dim * _FLOAT32,
        dot_products=(workload.n_examples * kept + chunk_rows * chunk) * _FLOAT64,
    )


def _activations(
    model: ModelShape, workload: GradientWorkload, tokens: int, examples: int, dim: int
) -> ActivationEstimate:
    """The engine's working memory for one batch (module docstring, "activations")."""
    h, f, s, r = model.hidden_size, model.intermediate_size, model.dtype_bytes, workload.rank
    features = [model.linear_features(name) for name in workload.targets]
    layers = model.num_layers
    full_layer = 2 * _FLOAT32 * h + 4 * s * h + 3 * s * f
    # With LoRA only in the MLP, the first layer's graph starts at its up_proj.
    mlp_only = all(name in ("gate_proj", "up_proj", "down_proj") for name in workload.targets)
    first_layer = s * f if mlp_only else full_layer
    saved = tokens * (first_layer + (layers - 1) * full_layer + _FLOAT32 * h)
    products = max(
        max(tokens * (i + r) + examples * i * r, tokens * (r + o) + examples * r * o)
        for i, o in features
    )
    return ActivationEstimate(
        records=tokens * layers * sum(_FLOAT32 * (i + r + o) for i, o in features),
        autograd_saved=saved,
        logits=tokens * model.vocab_size * (s + 2 * _FLOAT32),
        output_grads=tokens * layers * sum(_FLOAT32 * (r + o) for _, o in features),
        products=_FLOAT32 * products,
        batch_gradients=examples * dim * _FLOAT32,
    )


def choose_batch_tokens(
    model: ModelShape, workload: GradientWorkload, max_memory: int
) -> MemoryPlan:
    """The plan with the largest batch token budget whose peak fits in ``max_memory`` bytes.

    Raises:
        InputError: Not even a batch of one token fits (key ``max_memory``), naming what the
            fixed part (weights and kept gradients) needs.
    """
    fixed = plan_memory(model, workload, 1)
    if fixed.peak > max_memory:
        raise InputError(
            f"{_gib(max_memory)} cannot hold the weights ({_gib(fixed.weights)}) and the kept "
            f"gradients ({_gib(fixed.kept_gradients)}) with one batch: raise it, keep fewer "
            "gradients (fewer eval examples: probes are streamed) or project them "
            "(projection_dim)",
            key="max_memory",
        )
    # The peak grows with the budget, so a binary search finds how many budgets fit.
    fitting = bisect.bisect_right(
        range(1, MAX_BATCH_TOKENS + 1),
        max_memory,
        key=lambda tokens: plan_memory(model, workload, tokens).peak,
    )
    return plan_memory(model, workload, fitting)


def render_memory_plan(plan: MemoryPlan, max_memory: int | None = None) -> str:
    """A short table of the plan, for printing before a run."""
    rows = [
        ("model weights", plan.weights, f"+ LoRA {plan.lora_params:,} params in float32"),
        (
            "activations per batch",
            plan.activations.total,
            f"{plan.batch_tokens:,} tokens, <= {plan.batch_examples} examples (estimate)",
        ),
        (
            "gradients kept",
            plan.kept_gradients,
            f"{plan.kept_gradients // max(1, plan.kept_dim * _FLOAT32):,} x {plan.kept_dim:,} "
            "float32",
        ),
        ("dot products", plan.dot_products, "float64, with conversion chunks"),
        ("peak", plan.peak, "" if max_memory is None else f"of max_memory {_gib(max_memory)}"),
    ]
    lines = [f"memory plan (gradient dimension {plan.lora_params:,})"]
    lines += [f"  {name:<22} {_gib(size):>11}  {note}".rstrip() for name, size, note in rows]
    return "\n".join(lines)


def _gib(size: int) -> str:
    """Bytes as GiB (or MiB below 1 GiB), for the table."""
    if size >= _GIB:
        return f"{size / _GIB:.1f} GiB"
    return f"{size / (1 << 20):.1f} MiB"
