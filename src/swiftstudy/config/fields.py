"""Spec fields: :func:`option` declares a key once, with its default, check and one-line doc.

The checks here are the value types every spec shares (integers with a bound, numbers, paths,
choices, ``device``, ``dtype``, nested specs); a spec module adds its own for sections with rules
of their own. A check takes the :class:`~swiftstudy.config.reader.SpecValidator` reading the
document, the value and its key path, and returns the spec's value or raises ``InputError``.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swiftstudy.config.reader import SpecValidator, describe_value
from swiftstudy.config.yamlio import KeyPath
from swiftstudy.constants import DEVICES, DTYPES

#: ``device:`` values besides the named ones: one CUDA device by index.
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
    choices: Sequence[str] = ()
    omit_default: bool = False
    fill: Callable[[SpecValidator], Any] | None = None
    dump: Callable[[Any], Any] | None = None
    flag: str | None = None


def option(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    factory: Any = dataclasses.MISSING,
    **how: Any,
) -> Any:
    """A spec key: a dataclass field that carries its check and its one-line doc.

    The check follows from the field's type (``int``, ``float``, ``str``, ``bool``, ``Path``, a
    nested :class:`~swiftstudy.config.spec.Spec`, each ``| None`` for a nullable key) and these
    keywords, unless ``check`` is given.

    Args:
        default: The value when the key is absent; none makes the key required (unless ``fill``).
        doc: One line for ``--print-config``.
        factory: A default made by calling it (as ``dataclasses.field``'s ``default_factory``).
        how: The keywords of :class:`Option`: ``check`` (a :class:`Check`), ``key`` (the
            document's key when it is not the field's name), ``min`` (an integer's least value),
            ``positive`` (a number above 0, not just at least 0), ``choices``,
            ``omit_default`` (left out of the resolved dict at its default), ``fill`` (the value
            of an absent key, from those read before: ``reader.lookup``), ``dump`` (the value as
            plain data), ``flag`` (the command-line flag, when not ``--<key>``).
    """
    meta = {"option": Option(doc, **how)}
    return dataclasses.field(default=default, default_factory=factory, metadata=meta)


def infer_check(kind: Any, o: Option) -> Check | None:
    """The check of a field of type ``kind`` declared as ``o``; None: taken as written."""
    from swiftstudy.config.spec import Spec

    args = typing.get_args(kind)
    nullable = type(None) in args
    if nullable and len(args) == 2:
        kind = next(arg for arg in args if arg is not type(None))
    if o.check is not None or o.choices:
        return o.check or choice(o.choices)
    if isinstance(kind, type) and issubclass(kind, Spec):
        return nested(kind)
    checks = {
        int: lambda: integer(o.min, nullable=nullable),
        float: lambda: number(positive=o.positive, nullable=nullable),
        str: lambda: string(nullable=nullable),
        bool: boolean,
        Path: lambda: path(nullable=nullable),
    }
    return checks[kind]() if kind in checks else None


def integer(minimum: int | None = None, *, nullable: bool = False) -> Check:
    return Check(lambda r, v, k: r.integer(v, k, minimum, nullable=nullable), parse=int)


def number(*, positive: bool, nullable: bool = False) -> Check:
    run = _nullable(lambda r, v, k: r.number(v, k, positive=positive), nullable)
    return Check(run, parse=float)


def string(*, nullable: bool = False) -> Check:
    return Check(_nullable(lambda r, v, k: r.string(v, k), nullable))


def boolean() -> Check:
    return Check(lambda r, v, k: r.boolean(v, k))


def choice(choices: Sequence[str], *, what: str = "value") -> Check:
    return Check(lambda r, v, k: r.choice(v, choices, k, what=what), tuple(choices))


def path(*, nullable: bool = False) -> Check:
    """A local path, made absolute against the spec's folder."""
    return Check(_nullable(lambda r, v, k: r.path(v, k), nullable))


def model() -> Check:
    """A model alias or hub id as written, or a local path made absolute."""
    return Check(lambda r, v, k: r.model(v, k))


def device(choices: Sequence[str] = DEVICES, *, indexed: bool = True) -> Check:
    """A device name; ``indexed`` also takes ``cuda:N``."""
    if not indexed:
        return choice(choices)
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


def regexes() -> Check:
    """A non-empty list of regexes (a single one is refused: a list says it can hold more)."""

    def run(reader: SpecValidator, value: Any, key_path: KeyPath) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise reader.error(
                f"expected a non-empty list of regexes, got {describe_value(value)}", key_path
            )
        return tuple(regex().run(reader, item, (*key_path, i)) for i, item in enumerate(value))

    return Check(run)


def regex() -> Check:
    def run(reader: SpecValidator, value: Any, key_path: KeyPath) -> str:
        pattern = reader.string(value, key_path)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise reader.error(f"invalid regex {pattern!r}: {exc}", key_path) from None
        return pattern

    return Check(run)


def nested(spec: type, what: str | None = None, *, shorthand: str | None = None) -> Check:
    """A section read as the spec class ``spec``; a string stands for ``{shorthand: string}``."""

    def run(reader: SpecValidator, value: Any, key_path: KeyPath) -> Any:
        from swiftstudy.config.spec import read_spec

        if shorthand is not None and isinstance(value, str):
            value = {shorthand: value}
        return read_spec(spec, value, reader, key_path, what)

    return Check(run, spec=spec)


def _nullable(run: Callable[[SpecValidator, Any, KeyPath], Any], nullable: bool) -> Callable:
    if not nullable:
        return run
    return lambda r, v, k: None if v is None else run(r, v, k)
