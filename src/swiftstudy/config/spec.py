"""One reader and one writer for every spec, driven by the fields declared with ``option``.

:func:`read_spec` checks a mapping against a spec class: unknown keys (with a "did you mean"),
missing required keys, then each key's check in field order, then the class's ``_validate`` hook
for rules across keys. :func:`load_spec` reads a YAML file with its line numbers and applies
``key=value`` overrides first, so every error names the file, the line and the dotted key, and
says when the value was set by an override. :meth:`Spec.to_dict` is the resolved spec as plain
YAML-ready data (saved with every result); :func:`describe_spec` lists every key with its
default and doc (``swiftstudy <command> --print-config``).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from swiftstudy.config.fields import TEXT_PARSERS, Check, Option, choice
from swiftstudy.config.reader import SpecValidator, absolute_path, dotted_key, load_spec_data
from swiftstudy.config.yamlio import KeyPath, Lines

S = TypeVar("S")


class Spec:
    """Base of the spec classes (frozen dataclasses whose keys are declared with ``option``).

    Attributes:
        extra_keys: Keys the document takes besides the fields, with their docs; a field's check
            reads them with ``reader.lookup`` (the validate spec's ``train:`` and ``base:``).
        unsupported_keys: Keys of other tools that have no equivalent here, each with what to do
            instead: the "unknown key" error says it (the train spec's
            ``gradient_accumulation_steps``).
    """

    extra_keys: ClassVar[dict[str, str]] = {}
    unsupported_keys: ClassVar[dict[str, str]] = {}

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain YAML-ready data: every key (but those at an omitted default), in order.

        Paths become absolute path strings, tuples lists and nested specs their own dicts; an
        option's ``dump`` says otherwise. ``from_dict(cls, spec.to_dict(), ...)`` gives back an
        equal spec.
        """
        data: dict[str, Any] = {}
        for key, f, o in spec_options(type(self)):
            value = getattr(self, f.name)
            if not (o.omit_default and value == f.default):
                data[key] = plain(value) if o.dump is None else o.dump(value)
        return data


@functools.cache
def spec_options(cls: type) -> tuple[tuple[str, dataclasses.Field, Option], ...]:
    """``(key, field, option)`` of each key of a spec class, in field order (checks inferred)."""
    hints = typing.get_type_hints(cls)
    found = ((f, f.metadata.get("option")) for f in dataclasses.fields(cls))
    return tuple(
        (o.key or f.name, f, dataclasses.replace(o, check=infer_check(hints[f.name], o)))
        for f, o in found
        if o is not None
    )


def read_spec(
    cls: type[S],
    data: Any,
    reader: SpecValidator,
    key_path: KeyPath = (),
    what: str | None = None,
    **fixed: Any,
) -> S:
    """Check ``data`` (at ``key_path`` of the document ``reader`` reads) and build ``cls``.

    ``what`` describes the mapping in an error (default: its keys); ``fixed`` gives the fields
    that are no keys (a set's name, the spec's file). Raises ``InputError`` at the first problem.
    """
    options = spec_options(cls)
    keys = [key for key, _, _ in options]
    body = reader.mapping(data, key_path, what or f"a mapping {{{', '.join(keys)}}}")
    body = _resolve_aliases(reader, body, key_path, options)
    extra = list(getattr(cls, "extra_keys", {}))
    required = [key for key, f, o in options if _required(f, o)]
    optional = [k for k in [*keys, *extra] if k not in required]
    aliases = [alias for _, _, o in options for alias in o.aliases]
    reader.check_keys(body, required, optional, key_path, aliases=aliases, hints=key_hints(cls))
    values: dict[str, Any] = {key: body[key] for key in extra if key in body}
    reader.scope.append(values)
    try:
        for key, f, o in options:
            if key in body:
                value = body[key]
                values[f.name] = (
                    value if o.check is None else o.check(reader, value, (*key_path, key))
                )
            elif o.fill is not None:
                values[f.name] = o.fill(reader)
        validate = getattr(cls, "_validate", None)
        if validate is not None:
            validate(reader, values, body, key_path)
    finally:
        reader.scope.pop()
    return cls(**{k: v for k, v in values.items() if k not in extra}, **fixed)


def _resolve_aliases(
    reader: SpecValidator,
    body: dict[Any, Any],
    key_path: KeyPath,
    options: Sequence[tuple[str, dataclasses.Field, Option]],
) -> dict[Any, Any]:
    """``body`` with each key given by an alias under its own name (``reader.spelled`` keeps
    the alias for errors).

    Two names of one key are refused, except that one set by a command-line override replaces
    the one written in the file.
    """
    resolved = dict(body)
    for key, _, o in options:
        names = (key, *o.aliases)
        given = [name for name in body if name in names]  # in the document's order
        if len(given) > 1:
            by_override = [name for name in given if reader.overridden((*key_path, name))]
            if len(by_override) != 1:
                first, second = given[:2]
                raise reader.error(
                    f"{first!r} and {second!r} name the same key: give one of them",
                    (*key_path, second),
                )
            for name in given:
                if name != by_override[0]:
                    del resolved[name]
            given = by_override
        if given and given[0] != key:
            resolved[key] = resolved.pop(given[0])
            reader.spelled[(*key_path, key)] = (*key_path, given[0])
    return resolved


@functools.cache
def key_hints(cls: type) -> dict[str, str]:
    """What the "unknown key" error of ``cls`` says about particular keys: its
    ``unsupported_keys``, and the keys (and aliases) of its sections written one level up
    (``alpha`` → ``did you mean 'lora.alpha'?``)."""
    hints: dict[str, str] = {}
    for key, _, o in spec_options(cls):
        section = o.check.spec if o.check is not None and o.check.each == "" else None
        for sub_key, _, sub_o in spec_options(section) if section is not None else ():
            for name in (sub_key, *sub_o.aliases):
                hints.setdefault(name, f"did you mean '{key}.{sub_key}'?")
    keys = {name for key, _, o in spec_options(cls) for name in (key, *o.aliases)}
    hints = {name: hint for name, hint in hints.items() if name not in keys}
    return {**hints, **getattr(cls, "unsupported_keys", {})}


def key_names(cls: type, *keys: str) -> tuple[str, ...]:
    """Every name the document may give the keys ``keys`` of ``cls`` by: each key, then its
    aliases."""
    aliases = {key: o.aliases for key, _, o in spec_options(cls)}
    return tuple(name for key in keys for name in (key, *aliases[key]))


def from_dict(
    cls: type[S],
    data: Any,
    *,
    base_dir: Path,
    source: Path | None = None,
    lines: Lines | None = None,
    name_key: Callable[[KeyPath], str] | None = None,
) -> S:
    """Validate plain data (as loaded from YAML) and build the spec ``cls``.

    Relative paths resolve against ``base_dir``; ``source`` is the file errors name (and the
    ``spec_path`` of a class that has one), ``lines`` the line of each key path (None: set by a
    command-line override), ``name_key`` how errors name a key (default: the dotted key).
    """
    reader = SpecValidator(source, lines or {}, absolute_path(Path(base_dir)), name_key)
    keys = ", ".join(key for key, _, _ in spec_options(cls)[:3])
    fixed = {f.name: source for f in dataclasses.fields(cls) if f.name == "spec_path"}
    return read_spec(cls, data, reader, (), f"a mapping of spec keys ({keys}, ...)", **fixed)


def load_spec(cls: type[S], path: str | Path, overrides: Sequence[str] = ()) -> S:
    """Load and validate a spec file of class ``cls`` after ``key=value`` overrides.

    Relative paths resolve against the file's folder. Raises ``InputError`` naming the file, line
    and key when the file cannot be read, an override is malformed or the spec is invalid.
    """
    data, lines, path = load_spec_data(path, overrides)
    return from_dict(cls, data, base_dir=path.parent, source=path, lines=lines)


def plain(value: Any) -> Any:
    """A value as plain data: nested specs as dicts, paths as absolute strings, tuples as lists."""
    if isinstance(value, Spec):
        return value.to_dict()
    if isinstance(value, Path):
        return str(absolute_path(value))
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def describe_spec(cls: type, name_key: Callable[[KeyPath], str] = dotted_key) -> str:
    """Every key of a spec class with its default and doc, one per line, aligned."""
    rows = [(name_key(path), default, doc) for path, default, doc in _rows(cls, ())]
    widths = [max(len(row[i]) for row in rows) for i in (0, 1)]
    return "\n".join(
        f"{key:<{widths[0]}}  {default:<{widths[1]}}  {doc}".rstrip() for key, default, doc in rows
    )


def _rows(cls: type, prefix: KeyPath) -> list[tuple[KeyPath, str, str]]:
    rows = []
    for key, f, o in spec_options(cls):
        also = f" (also: {', '.join(o.aliases)})" if o.aliases else ""
        rows.append(((*prefix, key), default_text(f, o), o.doc + also))
        check = o.check
        if check is not None and check.spec is not None:
            below = prefix if check.each is None else (*prefix, key + check.each)
            rows += _rows(check.spec, below)
    rows += [((*prefix, key), "", doc) for key, doc in getattr(cls, "extra_keys", {}).items()]
    return rows


def default_text(f: dataclasses.Field, o: Option) -> str:
    """A key's default as ``--print-config`` shows it (``(required)``, ``null``, ``[a, b]``)."""
    if o.fill is not None:
        return "(derived)"
    if _required(f, o):
        return "(required)"
    value = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    return "" if isinstance(value, Spec) else _text(plain(value))


def _text(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, list):
        return "[" + ", ".join(_text(item) for item in value) + "]"
    return repr(value) if value == "" else str(value)


def _required(f: dataclasses.Field, o: Option) -> bool:
    no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    return no_default and o.fill is None


# -- checks that read a section as a spec (they need Spec and read_spec) --------------------


def infer_check(kind: Any, o: Option) -> Check | None:
    """The check of a field of type ``kind`` declared as ``o``; None: taken as written."""
    args = typing.get_args(kind)
    nullable = type(None) in args
    if nullable and len(args) == 2:
        kind = next(arg for arg in args if arg is not type(None))
    if o.check is not None or o.choices:
        return o.check or choice(o.choices)
    if isinstance(kind, type) and issubclass(kind, Spec):
        return nested(kind)
    rules: dict[Any, tuple[Callable, dict[str, Any]]] = {
        int: (SpecValidator.integer, {"minimum": o.min, "nullable": nullable}),
        float: (SpecValidator.number, {"positive": o.positive, "below": o.below}),
        str: (SpecValidator.string, {}),
        bool: (SpecValidator.boolean, {}),
        Path: (SpecValidator.path, {}),
    }
    if kind not in rules:
        return None
    rule, bounds = rules[kind]

    def run(reader: SpecValidator, value: Any, key_path: KeyPath) -> Any:
        return None if nullable and value is None else rule(reader, value, key_path, **bounds)

    return Check(run, parse=TEXT_PARSERS.get(kind, str))


def nested(spec: type, what: str | None = None, *, shorthand: str | None = None) -> Check:
    """A section read as the spec class ``spec``; a string stands for ``{shorthand: string}``."""

    def run(reader: SpecValidator, value: Any, key_path: KeyPath) -> Any:
        if shorthand is not None and isinstance(value, str):
            value = {shorthand: value}
        return read_spec(spec, value, reader, key_path, what)

    return Check(run, spec=spec)
