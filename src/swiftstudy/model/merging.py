"""Fold a LoRA adapter into its base weights for decoding, and take it out again bit-exactly.

Decoding with ``W' = W + s B A`` in place of ``W x + s B (A x)`` saves each adapted layer two
small products and PEFT's per-layer dispatch. The merge works in place, so no second copy of the
model is made. Floating-point subtraction does not always undo an addition: ``fl(fl(W + D) - D)``
differs from ``W`` in the last bit where ``W + D`` rounds into the next binade or onto a tie. The
merge finds those entries (a small fraction for a trained adapter) and keeps their original
values, so :func:`unmerge_lora` restores every weight bit for bit and a later gradient study or
NLL on the same loaded model sees exactly the weights it would have seen without decoding. A
checksum of each restored weight's bits makes any miss an error, not silent drift.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from peft.tuners.lora import LoraLayer
from peft.utils.other import transpose

logger = logging.getLogger(__name__)

#: Integer views of each float dtype, for exact comparisons and checksums of the bits.
_BITS = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.bfloat16: torch.int16,
    torch.float16: torch.int16,
}


@dataclass
class MergedLayer:
    """One adapted layer whose base weight holds the merged adapter.

    Attributes:
        layer: The PEFT LoRA layer.
        adapter: The merged adapter's name.
        positions: Flat indices of the weight entries that subtracting the delta misses.
        values: The original values at ``positions``.
        checksum: The sum of the original weight's bits, checked after the restore.
    """

    layer: LoraLayer
    adapter: str
    positions: torch.Tensor
    values: torch.Tensor
    checksum: int


def merge_lora(model: torch.nn.Module) -> list[MergedLayer]:
    """Add every active LoRA adapter's ``s B A`` to its base layer's weight, in place.

    The LoRA layers are marked merged, so their forward is the base layer's alone.

    Returns:
        What :func:`unmerge_lora` needs to restore the weights exactly; empty when the model has
        no LoRA layer (a full checkpoint).

    Raises:
        RuntimeError: An adapter is already merged.
    """
    merged: list[MergedLayer] = []
    try:
        with torch.no_grad():
            for layer in model.modules():
                if not isinstance(layer, LoraLayer):
                    continue
                if layer.merged_adapters:
                    raise RuntimeError(f"adapters {layer.merged_adapters} are already merged")
                for adapter in layer.active_adapters:
                    if adapter in layer.lora_A:
                        merged.append(_merge_layer(layer, adapter))
    except BaseException:
        unmerge_lora(merged)
        raise
    logger.debug("merged %d LoRA layers into their base weights", len(merged))
    return merged


def unmerge_lora(merged: list[MergedLayer]) -> None:
    """Subtract each merged delta again and put back the entries subtraction misses.

    Raises:
        RuntimeError: A restored weight's bits differ from the original's (the delta could not be
            recomputed exactly); the model should then be reloaded.
    """
    with torch.no_grad():
        for item in reversed(merged):
            weight = item.layer.get_base_layer().weight
            weight.sub_(_delta(item.layer, item.adapter))
            weight.view(-1)[item.positions] = item.values
            item.layer.merged_adapters.remove(item.adapter)
            if _checksum(weight) != item.checksum:
                raise RuntimeError("unmerging the adapter did not restore the base weights")


@contextmanager
def merged_lora(model: torch.nn.Module) -> Iterator[int]:
    """Decode with the adapter merged: merge on entry, restore the exact weights on exit.

    Yields:
        The number of merged layers.
    """
    merged = merge_lora(model)
    try:
        yield len(merged)
    finally:
        unmerge_lora(merged)


def _merge_layer(layer: LoraLayer, adapter: str) -> MergedLayer:
    """Merge one adapter into one layer, keeping the entries that subtraction would not restore."""
    weight = layer.get_base_layer().weight
    delta = _delta(layer, adapter)
    summed = weight + delta
    # Where fl(fl(W + D) - D) != W, the original value must be kept to be put back.
    missed = (summed - delta).view(_BITS[weight.dtype]) != weight.view(_BITS[weight.dtype])
    positions = missed.view(-1).nonzero().squeeze(1)
    item = MergedLayer(
        layer, adapter, positions, weight.view(-1)[positions].clone(), _checksum(weight)
    )
    weight.copy_(summed)
    layer.merged_adapters.append(adapter)
    return item


def _delta(layer: LoraLayer, adapter: str) -> torch.Tensor:
    """``s B A`` in the weight's layout and dtype, computed at least in float32.

    Half-precision products are rounded once, at the end, as PEFT's own merge does on CPU.
    """
    weight = layer.get_base_layer().weight
    compute = torch.promote_types(weight.dtype, torch.float32)
    lora_a = layer.lora_A[adapter].weight.to(compute)
    lora_b = layer.lora_B[adapter].weight.to(compute)
    delta = transpose(lora_b @ lora_a, layer.fan_in_fan_out) * layer.scaling[adapter]
    return delta.to(weight.dtype)


def _checksum(weight: torch.Tensor) -> int:
    """The sum of the weight's bits as integers: a changed entry changes it, barring collisions."""
    return int(weight.view(_BITS[weight.dtype]).sum(dtype=torch.int64))
