"""The per-example loss: summed completion-token NLL, with the LM head only where it is scored.

Implements ℓ(z; θ) = Σ_{t : m_t = 1} −log p_θ(x_t | x_<t), where ``m`` is the completion mask.
Prompt and padding tokens are masked. The vocabulary projection dominates a small model's cost, so
it is applied only to the hidden states whose next token is scored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def compute_completion_nll(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    """Summed completion NLL of each example in a right-padded batch.

    Args:
        model: A Hugging Face causal LM (optionally wrapped by PEFT) with ``get_decoder()`` and
            ``get_output_embeddings()``.
        input_ids: ``(B, T)`` token ids.
        attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding.
        completion_mask: ``(B, T)`` True where ``input_ids[b, t]`` is scored given the tokens
            before it. Position 0 can never be scored.

    Returns:
        ``(B,)`` float32 (or float64 for a float64 model) losses, differentiable.
    """
    hidden = model.get_decoder()(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False
    ).last_hidden_state
    # Position t-1 predicts token t: score the hidden states just before each completion token.
    rows, cols = completion_mask[:, 1:].nonzero(as_tuple=True)
    logits = _project_to_vocab(model, hidden[rows, cols])
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    nll = F.cross_entropy(logits, input_ids[rows, cols + 1], reduction="none")
    losses = torch.zeros(input_ids.shape[0], dtype=nll.dtype, device=nll.device)
    return losses.index_add(0, rows, nll)


def _project_to_vocab(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Apply the LM head and the logit transforms some architectures add after it."""
    logits = model.get_output_embeddings()(hidden)
    config = model.config
    # Cohere-style scaling and Gemma-2-style soft-capping live in the CausalLM forward.
    scale = getattr(config, "logit_scale", None)
    if isinstance(scale, (int, float)) and scale != 1:
        logits = logits * scale
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits
