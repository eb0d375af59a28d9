"""Put the base model in each checkpoint's state, and choose the weights we take gradients for.

For a series of LoRA adapters the base model is wrapped once with PEFT; later adapters with the
same configuration only swap the adapter weights in place, which is much cheaper than rebuilding
the wrapper. The gradient targets are then every ``lora_A`` / ``lora_B`` Linear of the adapter.
For full-model checkpoints each state is loaded afresh, and the targets are the Linear layers whose
weight names match the ``full_params`` regexes (the MLP up / down projections by default).

Only plain LoRA on Linear layers is supported: variants that change the layer's forward (DoRA,
aLoRA, ...) and LoRA on embeddings or convolutions are refused, because the gradient engine assumes
``y = W x + s B A x``. What a TRL run adds around the LoRA matrices is applied, so the model is in
the checkpoint's state, but kept out of the gradient: fully trained ``modules_to_save`` (often
``lm_head``), ``trainable_token_indices`` (the rows of chat tokens added to the vocabulary), and
embeddings resized for those tokens (the base model is resized to the rows the adapter saved).
The gradient, and so RelInf, covers the LoRA matrices alone: a vocabulary-sized ``lm_head`` would
outweigh them and an embedding is not a Linear layer; a warning says so when it happens.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import AuxiliaryTrainingWrapper
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from swiftstudy.constants import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    CHECKPOINT_KIND_ADAPTER,
    CHECKPOINT_KIND_FULL,
    DEFAULT_FULL_PARAMS,
    MODEL_CONFIG,
)
from swiftstudy.errors import InputError, first_line
from swiftstudy.fileio import read_json
from swiftstudy.model.checkpoints import Checkpoint

logger = logging.getLogger(__name__)

_ADAPTER = "default"
_LORA_KEY = re.compile(r"base_model\.model\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight")
#: The tensors of ``modules_to_save`` (a copy of each parameter), trainable tokens, and embeddings.
_AUXILIARY_KEY = re.compile(
    r"base_model\.model\.(?P<module>.+)\.(?P<param>weight|bias|token_adapter\.trainable_tokens_delta)"
)
#: adapter_config.json fields that do not change the adapted model.
_CONFIG_IGNORED = frozenset(
    {"base_model_name_or_path", "revision", "inference_mode", "peft_version", "auto_mapping"}
)
#: adapter_config.json fields that, when set, make the adapter more than plain Linear LoRA.
_UNSUPPORTED_CONFIG = {
    "use_dora": "DoRA",
    "lora_bias": "a LoRA bias",
    "target_parameters": "LoRA on raw parameters (target_parameters)",
    "alora_invocation_tokens": "activated LoRA (aLoRA)",
    "arrow_config": "Arrow routing",
    "use_qalora": "QA-LoRA",
    "use_bdlora": "block-diagonal LoRA",
}
_PLAIN_LORA = "only plain LoRA on Linear layers is supported"


@dataclass(frozen=True)
class TargetModule:
    """A Linear layer whose weight we take per-example gradients for.

    Attributes:
        name: The qualified module name in the loaded model, e.g.
            ``base_model.model.model.layers.0.mlp.up_proj.lora_A.default``.
        module: The layer; its ``weight`` is the gradient target.
    """

    name: str
    module: torch.nn.Linear


class ModelStates:
    """Holds the base model and yields it in each checkpoint's state, swapping adapters in place.

    The base model is moved to ``device`` / ``dtype`` once and then modified in place (PEFT
    injects LoRA layers into it), so callers should not use it directly afterwards. Adapter
    weights keep PEFT's dtype (float32 when the base is half precision).

    Args:
        base_model: The model the adapters were trained on (not a ``PeftModel``).
        full_params: For full checkpoints, regexes (``re.search``) over ``<module>.weight``
            names that choose the target Linear layers.
        dtype: The dtype of the model weights; the base model's own dtype if ``None``.
        device: The device to run on; the base model's own device if ``None``.
    """

    def __init__(
        self,
        base_model: PreTrainedModel,
        *,
        full_params: Sequence[str] = DEFAULT_FULL_PARAMS,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if isinstance(base_model, PeftModel):
            raise TypeError("ModelStates needs the base model, not a PeftModel")
        first = next(base_model.parameters())
        self._dtype = first.dtype if dtype is None else dtype
        self._device = first.device if device is None else torch.device(device)
        self._full_params = _compile_patterns(full_params)
        self._base = base_model.to(device=self._device, dtype=self._dtype)
        self._peft: PeftModel | None = None
        self._adapter_config: dict | None = None

    def load(self, ckpt: Checkpoint) -> tuple[torch.nn.Module, list[TargetModule]]:
        """Return the model in ``ckpt``'s state, in eval mode with no parameter requiring grad.

        Args:
            ckpt: An adapter or full-model checkpoint.

        Returns:
            The model (a ``PeftModel`` for adapters), and its gradient targets in
            ``named_modules()`` order.

        Raises:
            InputError: The checkpoint does not fit the base model, uses an unsupported adapter
                type, or (full checkpoints) no Linear weight matches ``full_params``.
        """
        if ckpt.kind == CHECKPOINT_KIND_ADAPTER:
            model, targets = self._load_adapter(ckpt)
        elif ckpt.kind == CHECKPOINT_KIND_FULL:
            model, targets = self._load_full(ckpt)
        else:
            raise ValueError(f"unknown checkpoint kind {ckpt.kind!r}")
        model.requires_grad_(False)
        model.eval()
        logger.info(
            "loaded %s checkpoint step %d from %s (%d target modules)",
            ckpt.kind,
            ckpt.step,
            ckpt.path,
            len(targets),
        )
        return model, targets

    def check(self, ckpt: Checkpoint) -> None:
        """Refuse a checkpoint that cannot be applied, without changing the model.

        For adapters this reads the config and the tensors and checks every shape against the
        base model, so a series with a bad checkpoint fails before any gradient is computed.
        Full checkpoints are checked when they are loaded.

        Raises:
            InputError: The adapter is unsupported or does not fit the base model.
        """
        if ckpt.kind == CHECKPOINT_KIND_ADAPTER:
            _read_adapter_config(ckpt)
            _check_fits_base(self._base, _read_adapter_weights(ckpt), ckpt)

    def _load_adapter(self, ckpt: Checkpoint) -> tuple[PeftModel, list[TargetModule]]:
        """Wrap the base model with ``ckpt``'s adapter, or swap its weights into the wrapper."""
        config = _read_adapter_config(ckpt)
        state = _read_adapter_weights(ckpt)
        if self._peft is not None and config == self._adapter_config:
            _check_state_fits(self._peft, state, ckpt)
            result = set_peft_model_state_dict(self._peft, state, adapter_name=_ADAPTER)
            if result.unexpected_keys:
                raise InputError(
                    f"unexpected tensors {result.unexpected_keys[:3]}",
                    path=ckpt.path,
                    key=ADAPTER_WEIGHTS,
                )
            return self._peft, _lora_targets(self._peft, ckpt)
        if self._peft is not None:
            logger.info("adapter config changed at %s; rebuilding the PEFT wrapper", ckpt.path)
            self._discard_adapter()
        _check_fits_base(self._base, state, ckpt)
        _resize_embeddings(self._base, _embedding_rows(self._base, state, ckpt), ckpt)
        try:
            peft = PeftModel.from_pretrained(
                self._base, ckpt.path, adapter_name=_ADAPTER, is_trainable=False
            )
        except (ValueError, RuntimeError, KeyError) as err:
            _strip_lora_layers(self._base)
            raise InputError(
                f"cannot apply the adapter: {first_line(err)}", path=ckpt.path, key=ADAPTER_CONFIG
            ) from err
        self._peft, self._adapter_config = peft.to(self._device), config
        try:
            _check_state_fits(peft, state, ckpt)
            targets = _lora_targets(peft, ckpt)
        except InputError:
            self._discard_adapter()
            raise
        auxiliary = _auxiliary_modules(peft)
        if auxiliary:
            logger.warning(
                "%s: %s applied as trained but left out of the gradient, which covers the LoRA "
                "matrices only",
                ckpt.path,
                ", ".join(auxiliary),
            )
        return peft, targets

    def _discard_adapter(self) -> None:
        """Remove the current PEFT wrapper and its LoRA layers, leaving the clean base model."""
        self._base = self._peft.unload()
        self._peft, self._adapter_config = None, None

    def _load_full(self, ckpt: Checkpoint) -> tuple[PreTrainedModel, list[TargetModule]]:
        """Load a full-model checkpoint and pick the Linear layers matching ``full_params``."""
        try:
            model = AutoModelForCausalLM.from_pretrained(
                ckpt.path, dtype=self._dtype, use_safetensors=True
            )
        except (OSError, ValueError) as err:
            raise InputError(
                f"cannot load the model: {first_line(err)}", path=ckpt.path, key=MODEL_CONFIG
            ) from err
        model.to(self._device)
        return model, _full_targets(model, self._full_params, ckpt)


def find_targets(
    model: torch.nn.Module, ckpt: Checkpoint, full_params: Sequence[str] = DEFAULT_FULL_PARAMS
) -> list[TargetModule]:
    """The gradient targets of a model already in its state, such as a model being trained.

    The targets ``ModelStates.load`` would pick for the same state: a ``PeftModel``'s LoRA
    matrices (refusing what is not plain LoRA, as for a saved adapter), else the Linear layers
    whose weight names match ``full_params``.

    Args:
        model: The model, a ``PeftModel`` or a full model.
        ckpt: Where the state is (or will be) saved, named in errors; its kind is not read.
        full_params: For a full model, regexes over ``<module>.weight`` names.

    Raises:
        InputError: The adapter is not plain Linear LoRA, or no Linear weight matches.
    """
    if not isinstance(model, PeftModel):
        return _full_targets(model, _compile_patterns(full_params), ckpt)
    config = model.peft_config.get(_ADAPTER)
    if config is None or config.peft_type != "LORA":
        raise _unsupported(ckpt, f"the model has no LoRA adapter named {_ADAPTER!r}")
    for field, what in _UNSUPPORTED_CONFIG.items():
        if getattr(config, field, None):
            raise InputError(f"{what} is not supported; {_PLAIN_LORA}", key=f"peft_config.{field}")
    if getattr(config, "bias", "none") != "none":
        raise InputError(f"trained biases are not supported; {_PLAIN_LORA}", key="peft_config.bias")
    return _lora_targets(model, ckpt)


def _full_targets(
    model: torch.nn.Module, patterns: Sequence[re.Pattern[str]], ckpt: Checkpoint
) -> list[TargetModule]:
    """The Linear layers whose ``<module>.weight`` names match one of ``patterns``."""
    targets = [
        TargetModule(name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and any(p.search(f"{name}.weight") for p in patterns)
    ]
    if not targets:
        raise InputError(
            f"no Linear weight matches {[p.pattern for p in patterns]}",
            path=ckpt.path,
            key="params",
        )
    return targets


def _compile_patterns(patterns: Sequence[str]) -> list[re.Pattern[str]]:
    """Compile the ``full_params`` regexes, naming the bad one in the error."""
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise InputError("at least one parameter regex is required", key="params")
    compiled = []
    for i, pattern in enumerate(patterns):
        try:
            compiled.append(re.compile(pattern))
        except re.error as err:
            raise InputError(f"invalid regex {pattern!r}: {err}", key=f"params[{i}]") from err
    return compiled


def _read_adapter_config(ckpt: Checkpoint) -> dict:
    """The adapter's config in comparable form, refusing anything but plain Linear LoRA."""
    path = ckpt.path / ADAPTER_CONFIG
    config = read_json(path)
    if not isinstance(config, dict):
        raise InputError("expected a JSON object", path=path)
    if config.get("peft_type") != "LORA":
        raise InputError(
            f"{_PLAIN_LORA}, got {config.get('peft_type')!r}", path=path, key="peft_type"
        )
    for field, what in _UNSUPPORTED_CONFIG.items():
        if config.get(field):
            raise InputError(f"{what} is not supported; {_PLAIN_LORA}", path=path, key=field)
    if config.get("bias", "none") != "none":
        raise InputError(f"trained biases are not supported; {_PLAIN_LORA}", path=path, key="bias")
    comparable = {k: v for k, v in config.items() if k not in _CONFIG_IGNORED}
    for field in ("target_modules", "exclude_modules"):
        if isinstance(comparable.get(field), list):
            comparable[field] = sorted(comparable[field])
    return comparable


def _read_adapter_weights(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """The adapter's tensors, read with safetensors on CPU."""
    try:
        return load_file(ckpt.path / ADAPTER_WEIGHTS, device="cpu")
    except (OSError, SafetensorError) as err:
        raise InputError(
            f"cannot read safetensors: {err}", path=ckpt.path, key=ADAPTER_WEIGHTS
        ) from err


def _linear_features(module: torch.nn.Module) -> tuple[int, int] | None:
    """(in_features, out_features) of a Linear or GPT-2 style Conv1D layer, else ``None``."""
    if isinstance(module, BaseTunerLayer):
        module = module.get_base_layer()
    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    return None


def _check_fits_base(
    base: torch.nn.Module, state: dict[str, torch.Tensor], ckpt: Checkpoint
) -> None:
    """Check every adapter tensor against the base layer it adapts, before touching the model.

    PEFT would inject its layers and only then fail on a shape mismatch, leaving the base model
    half-wrapped; checking first keeps the base model clean on error.
    """
    ranks: dict[str, dict[str, int]] = {}
    rows = _embedding_rows(base, state, ckpt)
    for key, tensor in state.items():
        match = _LORA_KEY.fullmatch(key)
        if match is None:
            _check_auxiliary_fits_base(base, key, tensor, rows, ckpt)
            continue
        name, part = match["module"], match["part"]
        try:
            features = _linear_features(base.get_submodule(name))
        except AttributeError:
            raise _misfit(ckpt, f"the base model has no module {name!r}") from None
        if features is None:
            raise _misfit(ckpt, f"{name!r} is not a Linear layer; {_PLAIN_LORA}")
        in_features, out_features = features
        rank_dim, feature_dim, expected = (
            (0, 1, in_features) if part == "A" else (1, 0, out_features)
        )
        if tensor.ndim != 2 or tensor.shape[feature_dim] != expected:
            raise _misfit(
                ckpt,
                f"{key!r} has shape {tuple(tensor.shape)}, which does not fit {name!r} "
                f"({in_features} -> {out_features})",
            )
        ranks.setdefault(name, {})[part] = tensor.shape[rank_dim]
    for name, parts in ranks.items():
        if len(parts) != 2 or parts["A"] != parts["B"]:
            raise _misfit(ckpt, f"lora_A and lora_B of {name!r} are missing or disagree on rank")


def _check_auxiliary_fits_base(
    base: torch.nn.Module, key: str, tensor: torch.Tensor, rows: int | None, ckpt: Checkpoint
) -> None:
    """Check a ``modules_to_save``, trainable-token or embedding tensor against the base model.

    Embedding rows may differ from the base model's: it is resized to ``rows`` before wrapping.
    """
    match = _AUXILIARY_KEY.fullmatch(key)
    # LoRA variants' tensors (lora_embedding_A, lora_magnitude_vector, a LoRA layer's base_layer).
    if match is None or "lora_" in key or ".base_layer" in key:
        raise _misfit(ckpt, f"unsupported tensor {key!r}; {_PLAIN_LORA}")
    name, param = match["module"], match["param"]
    try:
        module = _unwrapped(base.get_submodule(name))
    except AttributeError:
        raise _misfit(ckpt, f"the base model has no module {name!r}") from None
    if param != "weight" and param != "bias":
        expected: tuple[int, ...] = (tensor.shape[0], module.weight.shape[1])
    else:
        own = getattr(module, param, None)
        if not isinstance(own, torch.Tensor):
            raise _misfit(ckpt, f"{name!r} has no {param}")
        expected = tuple(own.shape)
        if rows is not None and name in _embedding_names(base):
            expected = (rows, *expected[1:])
    if tuple(tensor.shape) != expected:
        raise _misfit(
            ckpt, f"{key!r} has shape {tuple(tensor.shape)} but {name!r} needs {expected}"
        )


def _embedding_names(model: torch.nn.Module) -> set[str]:
    """The module names of the model's input and output embeddings."""
    layers = [model.get_input_embeddings(), model.get_output_embeddings()]
    return {name for name, module in model.named_modules() if any(module is x for x in layers)}


def _embedding_rows(
    base: torch.nn.Module, state: dict[str, torch.Tensor], ckpt: Checkpoint
) -> int | None:
    """The vocabulary rows of the embedding weights the adapter holds; None if it holds none."""
    names = _embedding_names(base)
    rows = {
        tensor.shape[0]
        for key, tensor in state.items()
        if (match := _AUXILIARY_KEY.fullmatch(key))
        and match["param"] == "weight"
        and match["module"] in names
    }
    if len(rows) > 1:
        raise _misfit(
            ckpt, f"its embedding weights disagree on the vocabulary size: {sorted(rows)}"
        )
    return rows.pop() if rows else None


def _resize_embeddings(base: PreTrainedModel, rows: int | None, ckpt: Checkpoint) -> None:
    """Resize the base model's embeddings to the adapter's rows (chat tokens added in training).

    The new rows are initialised with a forked RNG, so the caller's random state is unchanged;
    their values do not matter, as the adapter's own weights replace the rows that are used.
    """
    current = base.get_input_embeddings().weight.shape[0]
    if rows is None or rows == current:
        return
    logger.info("%s: resizing the embeddings from %d to %d rows", ckpt.path, current, rows)
    device = base.get_input_embeddings().weight.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        base.resize_token_embeddings(rows, mean_resizing=False)


def _unwrapped(module: torch.nn.Module) -> torch.nn.Module:
    """The original layer under a PEFT wrapper (a base model wrapped in place), else the layer."""
    if isinstance(module, AuxiliaryTrainingWrapper):
        return module.original_module
    if isinstance(module, BaseTunerLayer):
        return module.get_base_layer()
    return module


def _auxiliary_modules(model: torch.nn.Module) -> list[str]:
    """The names of the ``modules_to_save`` and trainable-token wrappers in the model."""
    return [name for name, m in model.named_modules() if isinstance(m, AuxiliaryTrainingWrapper)]


def _check_state_fits(model: PeftModel, state: dict[str, torch.Tensor], ckpt: Checkpoint) -> None:
    """Check that the adapter tensors are exactly the model's adapter tensors, with their shapes.

    Embedding weights the adapter saved (PEFT does when the vocabulary was resized) are loaded
    into the base model's embeddings, which have the same shapes after ``_resize_embeddings``.
    """
    expected = get_peft_model_state_dict(model, adapter_name=_ADAPTER, save_embedding_layers=False)
    embeddings = {
        f"base_model.model.{name}.weight" for name in _embedding_names(model.base_model.model)
    }
    for key in embeddings & (set(state) - set(expected)):
        module = _unwrapped(model.get_submodule(key.removesuffix(".weight")))
        expected[key] = module.weight
    missing = sorted(set(expected) - set(state))
    unknown = sorted(set(state) - set(expected))
    if missing or unknown:
        problems = [f"{len(missing)} missing (e.g. {missing[0]!r})"] if missing else []
        problems += [f"{len(unknown)} unknown (e.g. {unknown[0]!r})"] if unknown else []
        raise _misfit(ckpt, "tensors do not match the model: " + ", ".join(problems))
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise _misfit(
                ckpt,
                f"{key!r} has shape {tuple(tensor.shape)} but the model expects "
                f"{tuple(expected[key].shape)}",
            )


def _lora_targets(model: PeftModel, ckpt: Checkpoint) -> list[TargetModule]:
    """Every ``lora_A`` / ``lora_B`` Linear of the adapter, refusing other adapted layer types."""
    targets = []
    # modules_to_save and trainable tokens are in the state, not the gradient (module docstring).
    auxiliary = tuple(f"{name}." for name in _auxiliary_modules(model))
    for name, module in model.named_modules():
        if not isinstance(module, BaseTunerLayer) or name.startswith(auxiliary):
            continue
        if not isinstance(module, LoraLayer):
            raise _unsupported(ckpt, f"{name!r} is a {type(module).__name__}")
        if (
            _ADAPTER in module.lora_embedding_A
            or _ADAPTER in module.lora_magnitude_vector
            or module.lora_variant.get(_ADAPTER) is not None
        ):
            raise _unsupported(ckpt, f"{name!r} is not a plain LoRA Linear layer")
        if _ADAPTER not in module.lora_A:
            continue
        for part in ("lora_A", "lora_B"):
            layer = getattr(module, part)[_ADAPTER]
            if not isinstance(layer, torch.nn.Linear):
                raise _unsupported(ckpt, f"{name}.{part} is a {type(layer).__name__}")
            targets.append(TargetModule(f"{name}.{part}.{_ADAPTER}", layer))
    if not targets:
        raise _unsupported(ckpt, "the adapter adapts no layer")
    return targets


def _strip_lora_layers(base: torch.nn.Module) -> None:
    """Put back the original layers where PEFT injected LoRA layers before failing."""
    for name, module in list(base.named_modules()):
        if isinstance(module, BaseTunerLayer) and name:
            parent_name, _, child = name.rpartition(".")
            setattr(base.get_submodule(parent_name), child, module.get_base_layer())
    if hasattr(base, "peft_config"):
        del base.peft_config


def _misfit(ckpt: Checkpoint, message: str) -> InputError:
    """The error for adapter weights that do not fit the model."""
    return InputError(
        f"the adapter does not fit the model: {message}", path=ckpt.path, key=ADAPTER_WEIGHTS
    )


def _unsupported(ckpt: Checkpoint, message: str) -> InputError:
    """The error for adapters that are not plain Linear LoRA."""
    return InputError(f"{message}; {_PLAIN_LORA}", path=ckpt.path, key=ADAPTER_CONFIG)
