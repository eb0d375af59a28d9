"""The probes spec: a strategy applied to reference examples, through a generator.

``swiftstudy probes`` takes it as flags, one per key (``--max-new-tokens``); the generator
settings are :class:`~swiftstudy.config.generators.OpenAISettings` or
:class:`~swiftstudy.config.generators.HFSettings`, and a flag that only another generator reads
is refused. Errors name the flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swiftstudy.config.fields import option
from swiftstudy.config.generators import HFSettings, OpenAISettings
from swiftstudy.config.reader import SpecValidator
from swiftstudy.config.spec import Spec, from_dict, spec_options
from swiftstudy.config.yamlio import KeyPath
from swiftstudy.constants import BUILTIN_STRATEGIES, DEFAULT_GENERATION_FIELD
from swiftstudy.errors import InputError

GENERATORS = ("openai", "hf", "none")
#: The generator each settings section serves.
_SECTIONS = {"openai": OpenAISettings, "hf": HFSettings}


@dataclass(frozen=True)
class ProbesSpec(Spec):
    """What ``swiftstudy probes`` builds, and with which generator."""

    strategy: str = option(doc=f"A built-in ({', '.join(BUILTIN_STRATEGIES)}) or a strategy YAML.")
    references: str = option(doc="The reference examples.", key="in")
    out: str = option(doc="The probe JSONL file (main output kind).")
    generator: str = option(
        doc="openai: an OpenAI-compatible server; hf: a local transformers model; none: each "
        "reference supplies the answer in a field (--generation-field).",
        choices=GENERATORS,
    )
    split: str | None = option(None, "The split of a saved DatasetDict.")
    limit: int | None = option(None, "Use only the first N references.", min=1)
    cache_dir: str | None = option(None, "The answer cache (default: <cache>/generations).")
    generation_field: str = option(
        DEFAULT_GENERATION_FIELD, "none: the reference field of answers."
    )
    openai: OpenAISettings = option(OpenAISettings(), "openai generator.")
    hf: HFSettings = option(HFSettings(), "hf generator.")

    @property
    def settings(self) -> OpenAISettings | HFSettings | None:
        """The chosen generator's settings (None for ``none``)."""
        return getattr(self, self.generator, None)

    @staticmethod
    def _validate(
        reader: SpecValidator, values: dict[str, Any], body: dict[Any, Any], key_path: KeyPath
    ) -> None:
        if "generation_field" in body and values["generator"] != "none":
            raise reader.error("applies to --generator none only", ("generation_field",))


def probes_spec_from_flags(flags: Mapping[str, Any]) -> ProbesSpec:
    """The probes spec from the command line's flags (keys without ``--``, given ones only).

    A generator's flags (``model``, ``base_url``, ``batch_size``, ...) go to the chosen
    generator's section; one that only another generator reads is refused.

    Raises:
        InputError: A value is wrong, or a flag applies to another generator; names the flag.
    """
    generator = flags.get("generator")
    data: dict[str, Any] = {}
    for key, value in flags.items():
        owners = [name for name, cls in _SECTIONS.items() if key in _keys(cls)]
        if key in _keys(ProbesSpec) or not owners:
            data[key] = value
        elif generator in owners:
            data.setdefault(generator, {})[key] = value
        else:
            only = " or ".join(owners)
            raise InputError(f"applies to --generator {only} only", key=flag_name((key,)))
    return from_dict(ProbesSpec, data, base_dir=Path.cwd(), name_key=flag_name)


def flag_name(key_path: KeyPath) -> str:
    """The flag of a key: ``--max-new-tokens`` for ``("hf", "max_new_tokens")``."""
    *section, key = key_path
    cls = _SECTIONS.get(section[0]) if section else ProbesSpec
    flags = {k: o.flag for k, _, o in spec_options(cls) if o.flag} if cls else {}
    return flags.get(key) or "--" + str(key).replace("_", "-")


def describe_flag(key_path: KeyPath) -> str:
    """A flag for ``--print-config``: a generator's flags say which generator reads them."""
    if key_path[-1] in _SECTIONS:
        return f"{key_path[-1]}:"
    return flag_name(key_path) + (f" ({key_path[0]})" if len(key_path) > 1 else "")


def _keys(cls: type) -> set[str]:
    return {key for key, _, _ in spec_options(cls)}
