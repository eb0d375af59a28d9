"""YAML reading and writing that remembers line numbers, and ``key=value`` overrides.

``load_yaml`` returns plain Python values together with a map from key paths to the 1-based line
each node starts on, so that spec checks can point a user at the exact line of a bad value.
``apply_overrides`` applies torchtune-style command-line overrides such as ``batch_size=4`` or
``metrics.0.name=x``.
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

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def load_yaml(path: str | Path) -> tuple[Any, dict[KeyPath, int]]:
    """Read a YAML file into plain Python values and a map of key paths to line numbers.

    Mappings become ``dict``, sequences ``list`` and scalars the values SafeLoader gives them
    (``str``, ``int``, ``float``, ``bool``, ``None``, ...). The map sends every key path, e.g.
    ``("sets", "cot", "path")`` or ``("metrics", 2, "probes")``, to the 1-based line where that
    node starts (for a mapping entry, the line of its key); the empty tuple is the document root.

    Args:
        path: The YAML file.

    Returns:
        ``(data, lines)``; an empty document gives ``(None, {})``.

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
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            line = _mark_line(exc)
            raise InputError(_describe_yaml_error(exc), path=path, line=line) from None
        except yaml.YAMLError as exc:
            raise InputError(f"invalid YAML: {_one_line(str(exc))}", path=path) from None
        lines: dict[KeyPath, int] = {}
        data = None if root is None else _Builder(path, loader, lines).build(root, ())
    finally:
        loader.dispose()
    return data, lines


def apply_overrides(data: Any, overrides: Sequence[str]) -> Any:
    """Apply ``key=value`` command-line overrides to loaded YAML data.

    Keys are dotted paths (``a.b.c``); a numeric part indexes a list (``metrics.0.name``).
    Missing mapping keys are created, so ``batch_tokens=4096`` works when the file leaves it out.
    Values are parsed as YAML (``4`` is an int, ``null`` is None, ``[a, b]`` a list, ``'4'`` a
    string).

    Args:
        data: Loaded YAML data (``None`` for an empty document is treated as ``{}``).
        overrides: Strings of the form ``key=value``.

    Returns:
        A new object with the overrides applied; ``data`` is not modified.

    Raises:
        InputError: An override has no ``=``, an empty key, a value that is not valid YAML, or a
            path that runs through a scalar or past the end of a list. ``key`` names the override.
    """
    result = {} if data is None else copy.deepcopy(data)
    for override in overrides:
        key, value = _parse_override(override)
        result = _set_path(result, key, value)
        logger.debug("override %s = %r", key, value)
    return result


def dump_yaml(data: Any) -> str:
    """Serialise plain data to YAML text, keeping key order and unicode characters.

    Args:
        data: Plain Python values (dicts, lists, strings, numbers, booleans, None).

    Returns:
        The YAML document as a string.
    """
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def override_key_path(key: str) -> KeyPath:
    """Split a dotted override key into a key path (numeric parts become list indices).

    Args:
        key: A dotted key such as ``metrics.0.name``.

    Returns:
        The key path, e.g. ``("metrics", 0, "name")``.
    """
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
            return self.construct(node)
        if id(node) in self._active:
            raise self.fail("recursive alias (a node that contains itself)", node)
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode) and node.tag == _MAP_TAG:
                return self.build_mapping(node, key_path)
            if isinstance(node, SequenceNode) and node.tag == _SEQ_TAG:
                return [self.build(item, (*key_path, i)) for i, item in enumerate(node.value)]
            # Other collection tags SafeLoader knows (!!set, !!omap, ...): no per-item lines.
            return self.construct(node)
        finally:
            self._active.discard(id(node))

    def build_mapping(self, node: MappingNode, key_path: KeyPath) -> dict[Any, Any]:
        merged = self._merged_count(node)
        result: dict[Any, Any] = {}
        explicit: set[Any] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            if not isinstance(key_node, ScalarNode):
                raise self.fail("mapping keys must be plain scalars", key_node)
            key = self.construct(key_node)
            # Merged ("<<") entries come first and may be overridden; written keys may not repeat.
            if index >= merged:
                if key in explicit:
                    raise self.fail(f"duplicate key {key!r}", key_node)
                explicit.add(key)
            result[key] = self.build(
                value_node, (*key_path, key), line=key_node.start_mark.line + 1
            )
        return result

    def _merged_count(self, node: MappingNode) -> int:
        """Resolve ``<<`` merge keys in place; return how many leading entries they produced."""
        if id(node) not in self._merged:
            written = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
            try:
                self.loader.flatten_mapping(node)
            except yaml.MarkedYAMLError as exc:
                line = _mark_line(exc)
                raise InputError(_describe_yaml_error(exc), path=self.path, line=line) from None
            self._merged[id(node)] = len(node.value) - written
        return self._merged[id(node)]

    def construct(self, node: Node) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise InputError(
                _describe_yaml_error(exc), path=self.path, line=_mark_line(exc)
            ) from None


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
            if last:
                container[part] = value
            else:
                if container.get(part) is None:
                    container[part] = {}
                container = container[part]
        elif isinstance(container, list):
            if not isinstance(part, int):
                raise InputError(f"{where} is a list: use a numeric index, not {part!r}", key=key)
            if part >= len(container):
                raise InputError(
                    f"index {part} is out of range: {where} has {len(container)} items", key=key
                )
            if last:
                container[part] = value
            else:
                container = container[part]
        else:
            raise InputError(
                f"cannot set {key}: {where} is a {type(container).__name__}, not a mapping",
                key=key,
            )
    return data


def _mark_line(exc: yaml.MarkedYAMLError) -> int | None:
    mark = exc.problem_mark or exc.context_mark
    return None if mark is None else mark.line + 1


def _describe_yaml_error(exc: yaml.MarkedYAMLError) -> str:
    parts = [exc.problem or "invalid YAML"]
    if exc.problem_mark is not None:
        parts[0] += f" (column {exc.problem_mark.column + 1})"
    if exc.context:
        context = exc.context
        if exc.context_mark is not None:
            context += f" started at line {exc.context_mark.line + 1}"
        parts.append(context)
    return _one_line("invalid YAML: " + ", ".join(parts))


def _one_line(text: str) -> str:
    return " ".join(text.split())
