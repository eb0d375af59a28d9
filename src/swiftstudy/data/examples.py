"""Examples (a prompt and its assistant response) and their loaders: JSONL files and saved datasets.

Two record formats are accepted, one per JSONL line or dataset row:

* ``{"prompt": str, "response": str}``: a single user turn and its response;
* ``{"messages": [{"role": ..., "content": ...}, ...]}`` (OpenAI chat format): the last message
  is the assistant response, the earlier ones are the prompt.

Optional ``id`` and ``task`` fields (strings or integers) name the example and its task; both
default to the example's 0-based index, so every example is its own task. Other fields are ignored.
A field whose value is ``null`` counts as absent, as it does in a dataset row that lacks a column.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swiftstudy.errors import InputError

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant", "tool")
_ASSISTANT = "assistant"


@dataclass(frozen=True)
class Message:
    """One chat turn.

    Attributes:
        role: ``system``, ``user``, ``assistant`` or ``tool``.
        content: The text of the turn.
    """

    role: str
    content: str


@dataclass(frozen=True)
class Example:
    """A prompt and the assistant response whose loss (and gradient) we study.

    Attributes:
        id: The example's name, unique within its file.
        task: The task it belongs to; examples of one task are scored together.
        prompt: The prompt turns, in order (never empty).
        response: The assistant completion (never blank).
        origin: Where it came from, ``path:line`` (1-based) or ``path[row]``, for error messages.
    """

    id: str
    task: str
    prompt: tuple[Message, ...]
    response: str
    origin: str


@dataclass(frozen=True)
class _Location:
    """Where a record lives, to build errors and the example's ``origin``."""

    path: Path
    line: int | None = None
    row: int | None = None

    @property
    def origin(self) -> str:
        return f"{self.path}:{self.line}" if self.row is None else f"{self.path}[{self.row}]"

    @property
    def where(self) -> str:
        return f"line {self.line}" if self.row is None else f"row {self.row}"

    def error(self, message: str, key: str | None = None) -> InputError:
        """An InputError at this location; dataset rows put ``[row N]`` in front of the key."""
        if self.row is not None:
            key = f"[row {self.row}]" if key is None else f"[row {self.row}].{key}"
        return InputError(message, path=self.path, line=self.line, key=key)


def load_examples(path: str | Path, *, split: str | None = None) -> list[Example]:
    """Load examples from a JSONL file or a directory saved with ``datasets``' ``save_to_disk``.

    Args:
        path: A ``.jsonl`` file (one JSON object per line, blank lines skipped) or a directory
            written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``.
        split: The split to use when ``path`` holds a ``DatasetDict``; must be ``None`` otherwise.

    Returns:
        The examples, in file order.

    Raises:
        InputError: The path is missing or not readable as examples, a record is malformed, an id
            repeats, or there are no examples. The error names the path, line (or row) and key.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory", path=path)
    records = _dataset_records(path, split) if path.is_dir() else _jsonl_records(path, split)
    examples: list[Example] = []
    seen: dict[str, _Location] = {}
    for index, (location, record) in enumerate(records):
        example = _parse_record(record, index, location)
        if example.id in seen:
            raise location.error(
                f"duplicate id {example.id!r}, also on {seen[example.id].where}", key="id"
            )
        seen[example.id] = location
        examples.append(example)
    if not examples:
        raise InputError("no examples", path=path)
    logger.debug("Loaded %d examples from %s", len(examples), path)
    return examples


def _jsonl_records(path: Path, split: str | None) -> Iterator[tuple[_Location, Any]]:
    """Yield the parsed JSON value of each non-blank line of a JSONL file."""
    if split is not None:
        raise InputError("a JSONL file has no splits", path=path, key="split")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read as UTF-8 text: {error}", path=path) from error
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        location = _Location(path, line=line_number)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise location.error(f"malformed JSON: {error.msg} (column {error.colno})") from error
        yield location, record


def _dataset_records(path: Path, split: str | None) -> Iterator[tuple[_Location, Any]]:
    """Yield the rows of a ``Dataset`` (or one split of a ``DatasetDict``) saved to disk."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as error:
        raise InputError(
            "a directory that is not a dataset saved with save_to_disk", path=path
        ) from error
    if isinstance(loaded, datasets.DatasetDict):
        available = ", ".join(loaded) or "none"
        if split is None:
            raise InputError(
                f"a DatasetDict: choose a split (available: {available})", path=path, key="split"
            )
        if split not in loaded:
            raise InputError(
                f"unknown split {split!r} (available: {available})", path=path, key="split"
            )
        loaded = loaded[split]
    elif split is not None:
        raise InputError("a single Dataset has no splits", path=path, key="split")
    for row, record in enumerate(loaded):
        yield _Location(path, row=row), record


def _parse_record(record: Any, index: int, location: _Location) -> Example:
    """Turn one JSON object (or dataset row) into an Example, or raise an InputError."""
    if not isinstance(record, Mapping):
        raise location.error(f"expected a JSON object, got {type(record).__name__}")
    record = {key: value for key, value in record.items() if value is not None}
    has_pair = "prompt" in record or "response" in record
    if "messages" in record and has_pair:
        raise location.error("has both 'messages' and 'prompt'/'response': use one format")
    if "messages" in record:
        prompt, response = _parse_messages(record["messages"], location)
    elif has_pair:
        prompt, response = _parse_pair(record, location)
    else:
        raise location.error("expected 'prompt' and 'response', or 'messages'")
    return Example(
        id=_parse_name(record, "id", index, location),
        task=_parse_name(record, "task", index, location),
        prompt=prompt,
        response=response,
        origin=location.origin,
    )


def _parse_pair(record: Mapping[str, Any], location: _Location) -> tuple[tuple[Message, ...], str]:
    """Parse the ``{"prompt": ..., "response": ...}`` format."""
    for key in ("prompt", "response"):
        if key not in record:
            raise location.error(f"missing {key!r}", key=key)
        if not isinstance(record[key], str):
            raise location.error(f"must be a string, got {type(record[key]).__name__}", key=key)
    _check_completion(record["response"], location, "response")
    return (Message("user", record["prompt"]),), record["response"]


def _parse_messages(messages: Any, location: _Location) -> tuple[tuple[Message, ...], str]:
    """Parse the OpenAI chat format: earlier messages are the prompt, the last one the response."""
    if not isinstance(messages, list) or not messages:
        raise location.error("must be a non-empty list of messages", key="messages")
    parsed = tuple(_parse_message(m, location, f"messages[{i}]") for i, m in enumerate(messages))
    last = len(parsed) - 1
    if parsed[last].role != _ASSISTANT:
        raise location.error(
            f"the last message must be the assistant response, got role {parsed[last].role!r}",
            key=f"messages[{last}].role",
        )
    if last == 0:
        raise location.error(
            "needs at least one prompt message before the assistant response", key="messages"
        )
    _check_completion(parsed[last].content, location, f"messages[{last}].content")
    return parsed[:last], parsed[last].content


def _parse_message(message: Any, location: _Location, key: str) -> Message:
    """Parse one ``{"role": ..., "content": ...}`` message."""
    if not isinstance(message, Mapping):
        raise location.error(f"expected an object, got {type(message).__name__}", key=key)
    role = message.get("role")
    if role not in ROLES:
        raise location.error(f"role must be one of {', '.join(ROLES)}, got {role!r}", f"{key}.role")
    content = message.get("content")
    if not isinstance(content, str):
        raise location.error(
            f"must be a string, got {type(content).__name__}", key=f"{key}.content"
        )
    return Message(role, content)


def _check_completion(response: str, location: _Location, key: str) -> None:
    """Refuse a blank response: it has no tokens to put in the loss."""
    if not response.strip():
        raise location.error("empty completion", key=key)


def _parse_name(record: Mapping[str, Any], key: str, index: int, location: _Location) -> str:
    """Read ``id`` or ``task`` (string or integer), defaulting to the example's 0-based index."""
    if key not in record:
        return str(index)
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise location.error(f"must be a string or an integer, got {type(value).__name__}", key=key)
    return str(value)
