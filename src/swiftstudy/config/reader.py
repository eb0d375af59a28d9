"""The rules of single spec values, with errors at the file, line and key of the value at fault.

A :class:`SpecValidator` reads one document: it knows the file, the line of every key path (None
for a key set by a command-line override) and the folder relative paths resolve against. Each
value rule (a string, an integer, a number, a choice, ...) is written here once; the spec fields
(``config.fields``) and the strategy reader call them.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from swiftstudy.config.yamlio import KeyPath, Lines, apply_overrides, load_yaml
from swiftstudy.constants import BUNDLED_MODEL_ALIAS
from swiftstudy.errors import InputError


def load_spec_data(
    path: str | Path, overrides: Sequence[str] = ()
) -> tuple[Any, dict[KeyPath, int | None], Path]:
    """A spec file's data after ``key=value`` overrides, the line of each key path (None for
    keys set by an override) and the file's absolute path."""
    path = absolute_path(Path(path))
    data, lines = load_yaml(path)
    marked: dict[KeyPath, int | None] = dict(lines)
    return apply_overrides(data, overrides, marked), marked, path


def spec_key_error(spec_path: Path | None, message: str, key_path: KeyPath) -> InputError:
    """An ``InputError`` found after validation (e.g. once the data is read) at a spec key."""
    lines = load_yaml(spec_path)[1] if spec_path is not None and spec_path.is_file() else {}
    return SpecValidator(spec_path, lines, Path()).error(message, key_path)


class SpecValidator:
    """Checks of single values; raises ``InputError`` with the file, line and key at fault.

    Args:
        source: The spec file, named in errors.
        lines: Key paths to 1-based lines (None: set by a command-line override).
        base_dir: The folder relative paths resolve against.
        name_key: How errors name a key path (default ``metrics[1].probes``; the ``probes``
            command names its flags).
        where: Where a key path of the values read is written in the document (default: there;
            a validate run's train spec is merged from two places).

    Attributes:
        scope: The values read so far of each spec being read, outermost first (see
            :meth:`lookup`).
        spelled: The key path of each key given by one of its aliases, to the path as written
            (``("lr",)`` → ``("learning_rate",)``): errors name the key as the document spells it.
    """

    def __init__(
        self,
        source: Path | None,
        lines: Lines,
        base_dir: Path,
        name_key: Callable[[KeyPath], str] | None = None,
        where: Callable[[KeyPath], KeyPath] | None = None,
    ) -> None:
        self.source = source
        self.lines = lines
        self.base_dir = base_dir
        self.name_key = name_key or dotted_key
        self.where = where or (lambda key_path: key_path)
        self.scope: list[dict[str, Any]] = []
        self.spelled: dict[KeyPath, KeyPath] = {}

    def lookup(self, name: str, *default: Any) -> Any:
        """The value of field ``name`` already read, in the innermost spec that has it."""
        for values in reversed(self.scope):
            if name in values:
                return values[name]
        if default:
            return default[0]
        raise KeyError(name)

    def overridden(self, key_path: KeyPath) -> bool:
        """Whether the key at ``key_path`` was set by a command-line override."""
        return self.lines.get(self.where(self.written(key_path)), 0) is None

    def written(self, key_path: KeyPath) -> KeyPath:
        """``key_path`` as the document spells it (a key given by an alias: the alias)."""
        for depth in range(len(key_path), 0, -1):
            alias = self.spelled.get(key_path[:depth])
            if alias is not None:
                return (*alias, *key_path[depth:])
        return key_path

    def error(self, message: str, key_path: KeyPath) -> InputError:
        """An ``InputError`` at ``key_path``, on the line of its nearest recorded parent."""
        key_path = self.where(self.written(key_path))
        line = None
        for depth in range(len(key_path), -1, -1):
            if key_path[:depth] in self.lines:
                line = self.lines[key_path[:depth]]
                if line is None:
                    message += " (set by a command-line override)"
                break
        return InputError(message, path=self.source, line=line, key=self.name_key(key_path) or None)

    def mapping(self, value: Any, key_path: KeyPath, what: str) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise self.error(f"expected {what}, got {describe_value(value)}", key_path)
        return value

    def check_keys(
        self,
        mapping: dict[Any, Any],
        required: Sequence[str],
        optional: Sequence[str],
        key_path: KeyPath,
        *,
        aliases: Sequence[str] = (),
        hints: Mapping[str, str] | None = None,
    ) -> None:
        """Refuse an unknown key (with a "did you mean") or a missing required one.

        ``aliases`` are other names of the keys, offered in a "did you mean" too; ``hints`` say
        what to do about particular unknown keys (a name another tool uses, a key that belongs in
        a section), instead of the closest name.
        """
        allowed = (*required, *optional)
        expected = f"expected one of {', '.join(allowed)}"
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), [*allowed, *aliases], n=1)
                hint = f"did you mean {close[0]!r}?" if close else expected
                hint = (hints or {}).get(str(key), hint)
                raise self.error(f"unknown key {key!r}: {hint}", (*key_path, key))
        for key in required:
            if key not in mapping:
                raise self.error(f"missing required key {key!r}", (*key_path, key))

    def string(self, value: Any, key_path: KeyPath) -> str:
        if not isinstance(value, str):
            raise self.error(f"expected a string, got {describe_value(value)}", key_path)
        if not value.strip():
            raise self.error("must not be empty", key_path)
        return value

    def integer(
        self, value: Any, key_path: KeyPath, minimum: int | None = None, *, nullable: bool = False
    ) -> int | None:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            expected = "an integer or null" if nullable else "an integer"
            raise self.error(f"expected {expected}, got {describe_value(value)}", key_path)
        if minimum is not None and value < minimum:
            raise self.error(f"must be at least {minimum}, got {value}", key_path)
        return value

    def number(
        self, value: Any, key_path: KeyPath, *, positive: bool = False, below: float | None = None
    ) -> float:
        """A finite number of at least 0 (above 0 when ``positive``) and below ``below``.

        PyYAML reads ``1e-5`` (no dot) as a string, so strings are parsed; integers stay integers
        (``alpha: 512`` is written back as ``512``).
        """
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None or not math.isfinite(number):
            raise self.error(f"expected a number, got {describe_value(value)}", key_path)
        if number < 0 or (positive and number == 0):
            bound = "positive" if positive else "at least 0"
            raise self.error(f"must be {bound}, got {number}", key_path)
        if below is not None and number >= below:
            raise self.error(f"must be below {below}, got {number}", key_path)
        return number

    def boolean(self, value: Any, key_path: KeyPath) -> bool:
        if not isinstance(value, bool):
            raise self.error(f"expected true or false, got {describe_value(value)}", key_path)
        return value

    def choice(
        self, value: Any, choices: Sequence[str], key_path: KeyPath, *, what: str = "value"
    ) -> str:
        text = self.string(value, key_path)
        if text not in choices:
            known = "known sets" if what == "set" else "expected one of"
            raise self.error(f"unknown {what} {text!r} ({known}: {', '.join(choices)})", key_path)
        return text

    def path(self, value: Any, key_path: KeyPath) -> Path:
        """A local path, made absolute against the spec's folder."""
        return absolute_path(self.base_dir / Path(self.string(value, key_path)).expanduser())

    def model(self, value: Any, key_path: KeyPath) -> str:
        """``model:``: an alias or hub id stays as written; a local path is made absolute."""
        model = self.string(value, key_path)
        candidate = Path(model).expanduser()
        looks_like_path = model.lower().endswith(".gguf") or model.startswith(("./", "../", "~"))
        if candidate.is_absolute() or looks_like_path or (self.base_dir / candidate).exists():
            return str(absolute_path(self.base_dir / candidate))
        return model


def model_source(name: str) -> str:
    """What a ``model:`` value names: ``bundled`` (the alias of the bundled model), ``gguf`` (a
    ``.gguf`` file), ``folder`` (a local path) or ``hub`` (a Hugging Face Hub id)."""
    if name == BUNDLED_MODEL_ALIAS:
        return "bundled"
    if name.lower().endswith(".gguf"):
        return "gguf"
    path = Path(name).expanduser()
    return "folder" if path.is_absolute() or path.exists() or looks_like_path(name) else "hub"


def looks_like_path(name: str) -> bool:
    """Whether a missing ``name`` was meant as a path rather than a hub id (``org/model``)."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def absolute_path(path: Path) -> Path:
    """``path`` made absolute; abspath, not resolve(): symlinked folders stay as written."""
    return Path(os.path.abspath(path.expanduser()))


def dotted_key(key_path: KeyPath) -> str:
    """``("metrics", 1, "probes")`` → ``metrics[1].probes``."""
    text = ""
    for part in key_path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe_value(value: Any) -> str:
    """A value's kind for an error message: ``an integer (3)``, ``a list``, ``null``."""
    if value is None:
        return "null"
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    kinds.update({list: "a list", dict: "a mapping"})
    kind = kinds.get(type(value), type(value).__name__)
    return kind if isinstance(value, (list, dict)) else f"{kind} ({value!r})"
