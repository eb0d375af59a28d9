"""The engine against the naive loop on the bundled SmolLM2-135M-Instruct (float32 and float64)."""

from __future__ import annotations

import pytest
import torch

from conftest import add_random_lora
from swiftstudy.data import Example, Message, tokenize_examples
from swiftstudy.gradients import compute_gradients, compute_naive_gradients
from swiftstudy.model import load_base_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QA = [
    ("What is 17 + 25?", "42"),
    ("Name the capital of France.", "Paris"),
    (
        "A shop sells pens at 3 dollars each. How many pens can Tom buy with 20 dollars? "
        "Please output the reason first and then the final answer.",
        "Each pen costs 3 dollars. 3 times 6 is 18, which is at most 20, and 3 times 7 is 21, "
        "which is more than 20. So Tom can buy 6 pens and keeps 2 dollars. The answer is 6.",
    ),
    ("Classify the sentiment (positive/negative): I loved every minute.", "positive"),
    (
        "Rewrite with correct spelling: Teh weather is beautifull today.",
        "The weather is beautiful today.",
    ),
]


def _scaled_errors(fast: torch.Tensor, ref: torch.Tensor) -> float:
    """max |⟨a_i, a_j⟩ - ⟨r_i, r_j⟩| / (‖r_i‖ ‖r_j‖) over all pairs."""
    fast, ref = fast.double(), ref.double()
    gram_fast, gram_ref = fast @ fast.T, ref @ ref.T
    norms = gram_ref.diagonal().sqrt()
    return ((gram_fast - gram_ref).abs() / torch.outer(norms, norms)).max().item()


@pytest.fixture(scope="module")
def sequences():
    _, tokenizer = load_base_model("smollm2")
    examples = [
        Example(id=str(i), task=str(i), prompt=(Message("user", q),), response=r, origin="test")
        for i, (q, r) in enumerate(QA)
    ]
    return [(t.input_ids, t.completion_mask) for t in tokenize_examples(examples, tokenizer)]


def test_engine_float32_matches_naive_float64_on_bundled_model(sequences):
    model64, modules64 = add_random_lora(load_base_model("smollm2", dtype=torch.float64)[0])
    reference = compute_naive_gradients(model64, modules64, sequences)
    del model64, modules64
    model32, modules32 = add_random_lora(load_base_model("smollm2", dtype=torch.float32)[0])
    # Batches of 3 with padding, to exercise the masking of padded positions.
    fast = compute_gradients(
        model32, modules32, sequences, pad_id=0, max_examples=3, max_tokens=4096
    )
    naive32 = compute_naive_gradients(model32, modules32, sequences)
    assert fast.shape == reference.shape == (len(QA), 64 * (576 + 1536) * 2 * 30)
    assert _scaled_errors(fast, reference) <= 1e-3
    assert _scaled_errors(fast, naive32) <= 1e-3
    # Per example, the gradients themselves agree, not only their products.
    rel = ((fast.double() - reference).norm(dim=1) / reference.norm(dim=1)).max().item()
    assert rel <= 1e-3
