"""Spec fields: :func:`option` declares a key once, with its default, check and one-line doc.

A field's check follows from its type (``int``, ``float``, ``str``, ``bool``, ``Path``, a nested
spec, each ``| None`` for a nullable key) and the bounds given to :func:`option`, over the value
rules of :class:`~swiftstudy.config.reader.SpecValidator`. The checks here are for values with
rules of their own: ``device``, ``dtype``, lists, a name among the items read before. A check
takes the validator reading the document, the value and its key path, and returns the spec's
value or raises ``InputError``. :func:`revision`, :func:`trust_remote_code` and
:func:`attn_implementation` declare the keys of ``from_pretrained`` that every spec naming a
model shares.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from swiftstudy.config.reader import SpecValidator, describe_value, model_source
from swiftstudy.config.yamlio import KeyPath
from swiftstudy.constants import DEVICES, DTYPES

_CUDA_INDEX = re.compile(r"cuda:\d+")


@dataclass(frozen=True)
class Check:
    """A value check.

    Attributes:
        run: ``run(reader, value, key_path)`` → the spec's value, or raises ``InputError``.
        choices: The allowed values of a choice (the command line offers them).
        parse: Turns a command-line string into the value ``run`` checks.
        spec: The spec class of a nested section, whose keys ``--print-config`` lists below it.
        each: How the nested keys hang below the key: ``""`` (``lora.r``), ``"[]"`` (a list) or
            ``".<name>"`` (a mapping of names); None: at the same level (flattened).
    """

    run: Callable[[SpecValidator, Any, KeyPath], Any]
    choices: tuple[str, ...] = ()
    parse: Callable[[str], Any] = str
    spec: type | None = None
    each: str | None = ""

    def __call__(self, reader: SpecValidator, value: Any, key_path: KeyPath) -> Any:
        return self.run(reader, value, key_path)


@dataclass(frozen=True)
class Option:
    """What :func:`option` records in a field's metadata (see there)."""

    doc: str
    check: Check | None = None
    key: str | None = None
    min: int | None = None
    positive: bool = False
    below: float | None = None
    choices: Sequence[str] = ()
    omit_default: bool = False
    fill: Callable[[SpecValidator], Any] | None = None
    dump: Callable[[Any], Any] | None = None
    flag: str | None = None
    aliases: tuple[str, ...] = ()


def option(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    factory: Any = dataclasses.MISSING,
    **how: Any,
) -> Any:
    """A spec key: a dataclass field that carries its check and its one-line doc.

    Args:
        default: The value when the key is absent; none makes the key required (unless ``fill``).
        doc: One line for ``--print-config``.
        factory: A default made by calling it (as ``dataclasses.field``'s ``default_factory``).
        how: The keywords of :class:`Option`: ``check`` (a :class:`Check` or its ``run``
            function, instead of the check the type gives), ``key`` (the document's key when it
            is not the field's name), ``min`` (an integer's least value), ``positive`` (a number
            above 0, not just at least 0), ``below`` (a number's bound), ``choices``,
            ``omit_default`` (left out of the resolved dict at its default), ``fill`` (the value
            of an absent key, from those read before: ``reader.lookup``), ``dump`` (the value as
            plain data), ``flag`` (the command-line flag, when not ``--<key>``), ``aliases``
            (other names the document may give the key by, such as the ``TrainingArguments``
            name: the resolved dict writes the key, and giving two names of one key is refused).
    """
    if "check" in how and not isinstance(how["check"], Check):
        how["check"] = Check(how["check"])  # a plain function
    meta = {"option": Option(doc, **how)}
    return dataclasses.field(default=default, default_factory=factory, metadata=meta)


def _parse_bool(text: str) -> bool | str:
    """A command-line ``true`` / ``false`` as a boolean; anything else is left for the check."""
    return {"true": True, "false": False}.get(text.strip().lower(), text)


TEXT_PARSERS: dict[Any, Callable[[str], Any]] = {int: int, float: float, bool: _parse_bool}


def choice(choices: Sequence[str]) -> Check:
    return Check(lambda r, v, k: r.choice(v, choices, k), tuple(choices))


def among(key: str, what: str) -> Check:
    """The name of one of the items of ``key`` read before (a set, a run)."""
    return Check(lambda r, v, k: r.choice(v, [item.name for item in r.lookup(key)], k, what=what))


def device(choices: Sequence[str] = DEVICES) -> Check:
    """A device name, or ``cuda:N``: one CUDA device by index."""
    names = [*(n for n in choices if n != "auto"), "cuda:N", *(n for n in choices if n == "auto")]
    expected = ", ".join(names[:-1]) + " or " + names[-1]

    def run(reader: SpecValidator, value: Any, key_path: KeyPath) -> str:
        name = reader.string(value, key_path)
        if name not in choices and not _CUDA_INDEX.fullmatch(name):
            raise reader.error(f"unknown device {name!r} (expected {expected})", key_path)
        return name

    return Check(run)


def dtype() -> Check:
    """A compute dtype name, one of ``constants.DTYPES``."""
    return choice(DTYPES)


def torch_dtype(name: str) -> Any:
    """The ``torch.dtype`` of a ``dtype:`` name (``float32`` → ``torch.float32``)."""
    import torch  # here: the spec layer itself never needs torch

    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return getattr(torch, name)


def regex(reader: SpecValidator, value: Any, key_path: KeyPath) -> str:
    """A string that compiles as a regex."""
    pattern = reader.string(value, key_path)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise reader.error(f"invalid regex {pattern!r}: {exc}", key_path) from None
    return pattern


def listed(item: Callable, what: str, *, least: int = 1, single: bool = False) -> Check:
    """A list of at least ``least`` items, each checked by ``item``; ``single``: a lone string
    stands for a list of one."""

    def run(reader: SpecValidator, value: Any, key_path: KeyPath) -> tuple[Any, ...]:
        if single and isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or len(value) < least:
            size = "a non-empty list of" if least == 1 else f"a list of at least {least}"
            raise reader.error(f"expected {size} {what}, got {describe_value(value)}", key_path)
        return tuple(item(reader, v, (*key_path, i)) for i, v in enumerate(value))

    return Check(run)


# -- from_pretrained's keys, beside a spec's model (read after it) --------------------------

#: What each ``model_source`` is called in an error.
_SOURCES = {
    "bundled": "the bundled model",
    "gguf": "a GGUF file (converted once to a plain folder)",
    "folder": "a local folder",
    "hub": "a Hub id",
}
#: The models each ``from_pretrained`` key applies to (``model.load_base_model`` checks it too,
#: for a model left at its default).
APPLIES_TO = {
    "revision": ("hub",),
    "trust_remote_code": ("hub", "folder"),
    "attn_implementation": tuple(_SOURCES),
}


def source_names(*sources: str) -> str:
    """What models of ``sources`` are called in an error: ``a Hub id or a local folder``."""
    return " or ".join(_SOURCES[s].split(" (")[0] for s in sources)


def revision() -> Any:
    """``revision:``: the Hub revision of the model."""
    return _from_pretrained_key(
        "revision", "The Hub revision of model: a branch, tag or commit (Hub ids only)."
    )


def trust_remote_code() -> Any:
    """``trust_remote_code:``: run the model's own code from the Hub or its folder."""
    return _from_pretrained_key(
        "trust_remote_code",
        "Run the model's own modelling code (Hub ids and local folders).",
        SpecValidator.boolean,
    )


def attn_implementation() -> Any:
    """``attn_implementation:``: the attention kernel transformers builds the model with."""
    return _from_pretrained_key(
        "attn_implementation", "eager, sdpa, flash_attention_2, ...; null: transformers' choice."
    )


def _from_pretrained_key(key: str, doc: str, rule: Callable = SpecValidator.string) -> Any:
    """A ``from_pretrained`` key (false or null by default, then omitted from the resolved config);
    refused for a model none of ``APPLIES_TO[key]`` (a default model is checked on loading)."""
    boolean = rule is SpecValidator.boolean

    def run(reader: SpecValidator, value: Any, key_path: KeyPath) -> Any:
        if value is None and not boolean:
            return None
        checked = rule(reader, value, key_path)
        model = reader.lookup("model", None)
        source = None if model is None else model_source(model)
        if checked is not False and source is not None and source not in APPLIES_TO[key]:
            allowed = source_names(*APPLIES_TO[key])
            raise reader.error(
                f"applies to {allowed}, not to {_SOURCES[source]}: {model}", key_path
            )
        return checked

    check = Check(run, parse=_parse_bool if boolean else str)
    return option(False if boolean else None, doc, check=check, omit_default=True)
