"""YAML that remembers the line of every key, and torchtune-style ``key=value`` overrides.

``load_yaml`` gives plain values and the 1-based line each key path starts on (``("sets", "cot",
"path")``, ``("metrics", 2)``; ``()`` is the root), so that an error can name the line of a bad
value. ``apply_overrides`` applies ``batch_size=4`` or ``metrics.0.name=x`` and marks those keys as
set on the command line.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from swiftstudy.errors import InputError

logger = logging.getLogger(__name__)

#: A key path into a YAML document: mapping keys and list indices, outermost first.
KeyPath = tuple[Any, ...]
#: The 1-based line of each key path of a spec; None for a key set by a command-line override.
Lines = Mapping[KeyPath, int | None]

_MAP_TAG, _SEQ_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def load_yaml(path: str | Path) -> tuple[Any, dict[KeyPath, int]]:
    """Read a YAML file into plain values (dicts, lists, SafeLoader's scalars) and key lines.

    A mapping entry's line is its key's line. An empty document gives ``(None, {})``.

    Raises:
        InputError: The file is missing or unreadable, is not valid YAML, repeats a key, or uses
            a tag that SafeLoader does not allow.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("no such file", path=path) from None
    except IsADirectoryError:
        raise InputError("is a directory, expected a YAML file", path=path) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason})", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror})", path=path) from None
    loader = yaml.SafeLoader(text)
    lines: dict[KeyPath, int] = {}
    try:
        root = loader.get_single_node()
        data = None if root is None else _Builder(path, loader, lines).build(root, ())
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, path) from None
    finally:
        loader.dispose()
    return data, lines


def apply_overrides(
    data: Any, overrides: Sequence[str], lines: dict[KeyPath, int | None] | None = None
) -> Any:
    """Apply ``key=value`` command-line overrides to loaded YAML data (not modified: copied).

    Keys are dotted paths; a numeric part indexes a list (``metrics.0.name``); missing mapping
    keys are created. Values are parsed as YAML (``4``, ``null``, ``[a, b]``, ``'4'``). ``None``
    data (an empty document) is taken as ``{}``. Given ``lines``, each overridden key (and each
    parent it creates) is marked None there, and the file's lines below it are dropped.

    Raises:
        InputError: An override has no ``=``, an empty key, a value that is not valid YAML, or a
            path that runs through a scalar or past the end of a list; ``key`` names it.
    """
    result = {} if data is None else copy.deepcopy(data)
    for override in overrides:
        key, value = _parse_override(override)
        result = _set_path(result, key, value)
        logger.debug("override %s = %r", key, value)
        if lines is not None:
            key_path = override_key_path(key)
            for below in [k for k in lines if k[: len(key_path)] == key_path]:
                del lines[below]
            for depth in range(1, len(key_path) + 1):
                lines.setdefault(key_path[:depth], None)
    return result


def dump_yaml(data: Any) -> str:
    """Plain data as YAML text, in key order and with unicode characters as they are."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def override_key_path(key: str) -> KeyPath:
    """``metrics.0.name`` → ``("metrics", 0, "name")``: numeric parts index lists."""
    return tuple(int(part) if part.isdigit() else part for part in key.split("."))


class _Builder:
    """Turns a composed node tree into plain values while recording line numbers."""

    def __init__(self, path: Path, loader: yaml.SafeLoader, lines: dict[KeyPath, int]) -> None:
        self.path = path
        self.loader = loader
        self.lines = lines
        self._active: set[int] = set()
        self._merged: dict[int, int] = {}

    def fail(self, message: str, node: Node) -> InputError:
        return InputError(message, path=self.path, line=node.start_mark.line + 1)

    def build(self, node: Node, key_path: KeyPath, line: int | None = None) -> Any:
        self.lines[key_path] = node.start_mark.line + 1 if line is None else line
        if isinstance(node, ScalarNode):
            return self.loader.construct_object(node, deep=True)
        if id(node) in self._active:
            raise self.fail("recursive alias (a node that contains itself)", node)
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode) and node.tag == _MAP_TAG:
                return self.build_mapping(node, key_path)
            if isinstance(node, SequenceNode) and node.tag == _SEQ_TAG:
                return [self.build(item, (*key_path, i)) for i, item in enumerate(node.value)]
            # Other collection tags SafeLoader knows (!!set, !!omap, ...): no per-item lines.
            return self.loader.construct_object(node, deep=True)
        finally:
            self._active.discard(id(node))

    def build_mapping(self, node: MappingNode, key_path: KeyPath) -> dict[Any, Any]:
        merged = self._merged_count(node)
        result: dict[Any, Any] = {}
        explicit: set[Any] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            if not isinstance(key_node, ScalarNode):
                raise self.fail("mapping keys must be plain scalars", key_node)
            key = self.loader.construct_object(key_node, deep=True)
            # Merged ("<<") entries come first and may be overridden; written keys may not repeat.
            if index >= merged:
                if key in explicit:
                    raise self.fail(f"duplicate key {key!r}", key_node)
                explicit.add(key)
            line = key_node.start_mark.line + 1
            result[key] = self.build(value_node, (*key_path, key), line=line)
        return result

    def _merged_count(self, node: MappingNode) -> int:
        """Resolve ``<<`` merge keys in place; return how many leading entries they produced."""
        if id(node) not in self._merged:
            written = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
            self.loader.flatten_mapping(node)
            self._merged[id(node)] = len(node.value) - written
        return self._merged[id(node)]


def _parse_override(override: str) -> tuple[str, Any]:
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep:
        raise InputError(f"override {override!r} is not of the form key=value", key=key or override)
    if not key or any(not part for part in key.split(".")):
        raise InputError(f"override {override!r} has an empty key", key=key or override)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or _one_line(str(exc))
        raise InputError(f"override value {raw!r} is not valid YAML: {problem}", key=key) from None
    return key, value


def _set_path(data: Any, key: str, value: Any) -> Any:
    parts = override_key_path(key)
    container = data
    for depth, part in enumerate(parts):
        where = ".".join(str(p) for p in parts[:depth]) or "the top level"
        last = depth == len(parts) - 1
        if isinstance(container, dict):
            if part not in container and str(part) in container:
                part = str(part)
            if not last and container.get(part) is None:
                container[part] = {}
        elif isinstance(container, list):
            if not isinstance(part, int):
                raise InputError(f"{where} is a list: use a numeric index, not {part!r}", key=key)
            if part >= len(container):
                raise InputError(
                    f"index {part} is out of range: {where} has {len(container)} items", key=key
                )
        else:
            raise InputError(
                f"cannot set {key}: {where} is a {type(container).__name__}, not a mapping",
                key=key,
            )
        if last:
            container[part] = value
        else:
            container = container[part]
    return data


def _yaml_error(exc: yaml.YAMLError, path: Path) -> InputError:
    """A YAML error as one line at its line: the problem, its column, and where its context
    (an unclosed bracket, ...) started."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return InputError(f"invalid YAML: {_one_line(str(exc))}", path=path)
    parts = [exc.problem or "invalid YAML"]
    if exc.problem_mark is not None:
        parts[0] += f" (column {exc.problem_mark.column + 1})"
    if exc.context:
        context = exc.context
        if exc.context_mark is not None:
            context += f" started at line {exc.context_mark.line + 1}"
        parts.append(context)
    mark = exc.problem_mark or exc.context_mark
    line = None if mark is None else mark.line + 1
    return InputError(_one_line("invalid YAML: " + ", ".join(parts)), path=path, line=line)


def _one_line(text: str) -> str:
    return " ".join(text.split())
