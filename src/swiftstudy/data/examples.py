"""Examples (a prompt and its assistant response) and their loaders: JSONL files and datasets.

swiftstudy's own record formats, one per JSONL line or dataset row:

* ``{"prompt": str, "response": str}``: a single user turn and its response;
* ``{"messages": [{"role": ..., "content": ...}, ...]}`` (OpenAI chat format): the last message
  is the assistant response, the earlier ones are the prompt.

TRL's ``SFTTrainer`` formats, read so that the tokens a study scores are the ones the run trained
on (``data.render`` renders them as TRL 1.16 does):

* standard prompt/completion, ``{"prompt": str, "completion": str}``;
* conversational prompt/completion, ``{"prompt": [messages], "completion": [one assistant
  message]}``;
* conversational language modeling, ``{"messages": [...]}`` read with ``format="trl"``: every
  token is in the loss, as with SFTTrainer's default ``assistant_only_loss=False``. Without it a
  ``messages`` row is swiftstudy's own format (the last assistant message is the completion).

Optional ``id`` and ``task`` fields (strings or integers) name the example and its task; both
default to the example's 0-based index, so every example is its own task. Other fields are ignored.
A field whose value is ``null`` counts as absent, as it does in a dataset row that lacks a column.
``columns`` renames fields (``{"prompt": "question"}`` reads the prompt from ``question``).

The source is a JSONL file, a folder written by ``save_to_disk``, a folder of data files that
``datasets.load_dataset`` reads, or a Hugging Face Hub dataset id (from the local cache when
``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swiftstudy.errors import InputError, first_line

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant", "tool")
_ASSISTANT = "assistant"

#: How the rows of a source are read: ``auto`` tells the format of each row by its fields;
#: ``trl`` reads every row as TRL's SFTTrainer does (``messages``: every token in the loss).
READ_AUTO = "auto"
READ_TRL = "trl"
READ_FORMATS = (READ_AUTO, READ_TRL)

#: How an example is rendered into tokens (``Example.format``).
FORMAT_SWIFTSTUDY = "swiftstudy"
FORMAT_TRL_STANDARD = "trl-standard"
FORMAT_TRL_CONVERSATIONAL = "trl-conversational"
FORMAT_TRL_MESSAGES = "trl-messages"
TRL_FORMATS = (FORMAT_TRL_STANDARD, FORMAT_TRL_CONVERSATIONAL, FORMAT_TRL_MESSAGES)

#: The fields ``columns`` may rename.
FIELDS = ("prompt", "response", "completion", "messages", "id", "task")
#: Row fields that change how TRL renders a conversation; not supported, so refused.
_TRL_RENDER_FIELDS = ("tools", "chat_template_kwargs")
_MESSAGE_KEYS = frozenset({"role", "content"})
#: ``owner/name`` or ``name``: what a Hub dataset id looks like, as opposed to a local path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_DATA_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".arrow", ".txt")


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
        prompt: The prompt turns, in order (never empty). TRL's standard format keeps its prompt
            text as one ``user`` turn.
        response: The assistant completion (never blank).
        origin: Where it came from, ``path:line`` (1-based) or ``path[row]``, for error messages.
        format: How it is rendered into tokens: ``swiftstudy`` (its own formats) or one of
            ``TRL_FORMATS`` (as TRL's SFTTrainer renders it for training).
        record: Every field of the JSON line or dataset row it was read from, as read (before
            ``columns`` renames), ``null`` fields dropped: what a strategy template or the eval
            set's ``checkpoints`` read beyond the example, so no one reads the file again. Empty
            for an example built in code; not compared.
    """

    id: str
    task: str
    prompt: tuple[Message, ...]
    response: str
    origin: str
    format: str = FORMAT_SWIFTSTUDY
    record: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class _Location:
    """Where a record lives, to build errors and the example's ``origin``."""

    path: Path | str
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


def load_examples(
    path: str | Path,
    *,
    split: str | None = None,
    name: str | None = None,
    columns: Mapping[str, str] | None = None,
    format: str = READ_AUTO,
) -> list[Example]:
    """Load examples from a JSONL file, a dataset folder or a Hugging Face Hub dataset.

    Args:
        path: A ``.jsonl`` file (one JSON object per line, blank lines skipped); a folder written
            by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``; a folder of data files
            that ``datasets.load_dataset`` reads; or a Hub dataset id (``owner/name``), read with
            ``datasets.load_dataset`` (offline from the local cache when ``HF_HUB_OFFLINE=1``).
        split: The split to use when the source has several; must be ``None`` for a JSONL file or
            a single saved ``Dataset``.
        name: The dataset configuration, for ``load_dataset`` sources only.
        columns: Field renames, ``{field: column}``: the field (one of ``FIELDS``) is read from
            ``column``, which then stands for it alone.
        format: ``auto`` (each row's fields tell its format) or ``trl`` (every row is read as
            TRL's SFTTrainer reads it; see the module docstring).

    Returns:
        The examples, in file order.

    Raises:
        InputError: The path is missing or not readable as examples, a record is malformed, an id
            repeats, or there are no examples. The error names the path, line (or row) and key.
    """
    _check_options(columns, format)
    return _parse_records(_records(path, split, name), path, columns, format)


def parse_examples(
    records: Iterable[Any],
    *,
    source: str,
    columns: Mapping[str, str] | None = None,
    format: str = READ_AUTO,
) -> list[Example]:
    """Examples from records in memory (dicts, dataset rows), read as ``load_examples`` reads
    the rows of a dataset.

    Args:
        records: The records, in order.
        source: What they are, named in errors and in each example's ``origin``
            (``source[row]``).
        columns: As for ``load_examples``.
        format: As for ``load_examples``.

    Raises:
        InputError: A record is malformed, an id repeats, or there are none; the error names
            ``source``, the row and the key.
    """
    _check_options(columns, format)
    return _parse_records(_rows(records, source), source, columns, format)


def _parse_records(
    records: Iterable[tuple[_Location, Any]],
    source: str | Path,
    columns: Mapping[str, str] | None,
    format: str,
) -> list[Example]:
    """Each record parsed into an Example; ids must be unique and there must be one."""
    examples: list[Example] = []
    seen: dict[str, _Location] = {}
    for index, (location, record) in enumerate(records):
        example = _parse_record(record, index, location, columns or {}, trl=format == READ_TRL)
        if example.id in seen:
            raise location.error(
                f"duplicate id {example.id!r}, also on {seen[example.id].where}", key="id"
            )
        seen[example.id] = location
        examples.append(example)
    if not examples:
        raise InputError("no examples", path=source)
    logger.debug("Loaded %d examples from %s", len(examples), source)
    return examples


def is_hub_dataset_id(path: str | Path) -> bool:
    """Whether ``path`` names a Hub dataset (``owner/name``) rather than a local file or folder.

    A path that exists locally, starts like a path (``.``, ``/``, ``~``) or ends like a data file
    (``.jsonl``, ``.parquet``, ...) is local; a missing local path is reported as missing.
    """
    text = str(path)
    return (
        _HUB_ID.fullmatch(text) is not None
        and not text.lower().endswith(_DATA_FILE_SUFFIXES)
        and not Path(text).expanduser().exists()
    )


def _check_options(columns: Mapping[str, str] | None, format: str) -> None:
    """Refuse a ``columns`` mapping or ``format`` that can never work."""
    if format not in READ_FORMATS:
        raise InputError(f"must be one of {', '.join(READ_FORMATS)}, got {format!r}", key="format")
    for field, column in (columns or {}).items():
        if field not in FIELDS:
            raise InputError(
                f"unknown field {field!r}: columns maps a field ({', '.join(FIELDS)}) to the "
                "column it is read from",
                key=f"columns.{field}",
            )
        if not isinstance(column, str) or not column:
            raise InputError(f"must be a column name, got {column!r}", key=f"columns.{field}")


def _records(
    path: str | Path, split: str | None, name: str | None
) -> Iterator[tuple[_Location, Any]]:
    """The records of a JSONL file, a saved dataset, a data-file folder or a Hub dataset."""
    local = Path(path).expanduser()
    if local.is_dir():
        return _dataset_records(local, split, name)
    if local.exists():
        if name is not None:
            raise InputError("a JSONL file has no configurations", path=local, key="name")
        return _jsonl_records(local, split)
    if is_hub_dataset_id(path):
        return _loaded_dataset_records(str(path), split, name)
    raise InputError("no such file or directory", path=local)


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


def _dataset_records(
    path: Path, split: str | None, name: str | None
) -> Iterator[tuple[_Location, Any]]:
    """Yield the rows of a dataset folder: saved with ``save_to_disk``, else data files."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        return _loaded_dataset_records(path, split, name)
    if name is not None:
        raise InputError(
            "a dataset saved with save_to_disk has no configurations", path=path, key="name"
        )
    return _rows(_choose_split(loaded, split, path), path)


def _loaded_dataset_records(
    source: str | Path, split: str | None, name: str | None
) -> Iterator[tuple[_Location, Any]]:
    """Yield the rows of ``datasets.load_dataset(source, name, split=split)``."""
    import datasets

    try:
        loaded = datasets.load_dataset(str(source), name, split=split)
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as error:
        message = first_line(error)
        if split is not None and "split" in message.lower():
            raise InputError(message, path=source, key="split") from error
        what = "a folder" if isinstance(source, Path) else "a Hub dataset"
        raise InputError(
            f"not a dataset: {what} that datasets.load_dataset cannot read ({message})",
            path=source,
        ) from error
    # With a split, load_dataset returns that split's Dataset; without one, a DatasetDict.
    return _rows(loaded if split is not None else _choose_split(loaded, None, source), source)


def _choose_split(loaded: Any, split: str | None, path: str | Path) -> Any:
    """The one ``Dataset`` of ``loaded``: the chosen split of a ``DatasetDict``, else itself."""
    import datasets

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
        return loaded[split]
    if split is not None:
        raise InputError("a single Dataset has no splits", path=path, key="split")
    return loaded


def _rows(dataset: Iterable[Any], path: str | Path) -> Iterator[tuple[_Location, Any]]:
    """Yield each row of a ``Dataset`` (or records in memory) with its location."""
    for row, record in enumerate(dataset):
        yield _Location(path, row=row), record


def _renamed(
    record: Mapping[str, Any], columns: Mapping[str, str], location: _Location
) -> Mapping[str, Any]:
    """The record with each mapped field read from its column (the column's own name dropped)."""
    for field, column in columns.items():
        if column not in record:
            raise location.error(f"no column {column!r} (columns.{field})", key=column)
    sources = set(columns.values())
    renamed = {k: v for k, v in record.items() if k not in sources and k not in columns}
    renamed.update({field: record[column] for field, column in columns.items()})
    return renamed


def _parse_record(
    raw: Any, index: int, location: _Location, columns: Mapping[str, str], *, trl: bool
) -> Example:
    """Turn one JSON object (or dataset row) into an Example, or raise an InputError."""
    if not isinstance(raw, Mapping):
        raise location.error(f"expected a JSON object, got {type(raw).__name__}")
    renamed = _renamed(raw, columns, location)
    record = {key: value for key, value in renamed.items() if value is not None}
    pair_keys = [key for key in ("prompt", "response", "completion") if key in record]
    if "messages" in record and pair_keys:
        raise location.error(
            f"has both 'messages' and {'/'.join(map(repr, pair_keys))}: use one format"
        )
    if "response" in record and "completion" in record:
        raise location.error(
            "has both 'response' (swiftstudy's format) and 'completion' (TRL's): use one format"
        )
    if "messages" in record:
        if trl:
            _refuse_render_fields(record, location)
        prompt, response = _parse_messages(record["messages"], location, strict=trl)
        format = FORMAT_TRL_MESSAGES if trl else FORMAT_SWIFTSTUDY
    elif "completion" in record:
        prompt, response, format = _parse_prompt_completion(record, location)
    elif pair_keys:
        if trl:
            raise location.error(
                "'prompt'/'response' is swiftstudy's own format, not TRL's: name the response "
                "'completion' (columns: {completion: response}) or leave format at auto"
            )
        prompt, response = _parse_pair(record, location)
        format = FORMAT_SWIFTSTUDY
    else:
        raise location.error(
            "expected 'prompt' and 'response', 'prompt' and 'completion' (TRL), or 'messages'"
        )
    return Example(
        id=_parse_name(record, "id", index, location),
        task=_parse_name(record, "task", index, location),
        prompt=prompt,
        response=response,
        origin=location.origin,
        format=format,
        record={key: value for key, value in raw.items() if value is not None},
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


def _parse_prompt_completion(
    record: Mapping[str, Any], location: _Location
) -> tuple[tuple[Message, ...], str, str]:
    """Parse TRL's prompt/completion formats: both strings (standard) or both message lists."""
    if "prompt" not in record:
        raise location.error("missing 'prompt'", key="prompt")
    prompt, completion = record["prompt"], record["completion"]
    if isinstance(prompt, str) and isinstance(completion, str):
        _check_completion(completion, location, "completion")
        return (Message("user", prompt),), completion, FORMAT_TRL_STANDARD
    if not isinstance(prompt, list) or not isinstance(completion, list):
        raise location.error(
            "'prompt' and 'completion' must both be strings (TRL's standard format) or both "
            f"lists of messages (conversational), got {type(prompt).__name__} and "
            f"{type(completion).__name__}",
            key="completion",
        )
    _refuse_render_fields(record, location)
    if not prompt:
        raise location.error("must be a non-empty list of messages", key="prompt")
    turns = tuple(
        _parse_message(m, location, f"prompt[{i}]", strict=True) for i, m in enumerate(prompt)
    )
    if len(completion) != 1:
        raise location.error(
            f"expected exactly one assistant message, got {len(completion)} messages",
            key="completion",
        )
    answer = _parse_message(completion[0], location, "completion[0]", strict=True)
    if answer.role != _ASSISTANT:
        raise location.error(
            f"the completion must be an assistant message, got role {answer.role!r}",
            key="completion[0].role",
        )
    _check_completion(answer.content, location, "completion[0].content")
    return turns, answer.content, FORMAT_TRL_CONVERSATIONAL


def _parse_messages(
    messages: Any, location: _Location, *, strict: bool = False
) -> tuple[tuple[Message, ...], str]:
    """Parse the OpenAI chat format: earlier messages are the prompt, the last one the response."""
    if not isinstance(messages, list) or not messages:
        raise location.error("must be a non-empty list of messages", key="messages")
    parsed = tuple(
        _parse_message(m, location, f"messages[{i}]", strict=strict) for i, m in enumerate(messages)
    )
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


def _parse_message(message: Any, location: _Location, key: str, *, strict: bool = False) -> Message:
    """Parse one ``{"role": ..., "content": ...}`` message.

    ``strict`` (TRL formats) refuses other keys (``tool_calls``, ...): the chat template would
    render them, and a Message cannot carry them.
    """
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
    if strict:
        extra = sorted(k for k, v in message.items() if k not in _MESSAGE_KEYS and v is not None)
        if extra:
            raise location.error(
                "messages with keys other than role and content are not supported",
                key=f"{key}.{extra[0]}",
            )
    return Message(role, content)


def _refuse_render_fields(record: Mapping[str, Any], location: _Location) -> None:
    """Refuse the row fields that TRL passes to the chat template (not supported here)."""
    for key in _TRL_RENDER_FIELDS:
        if key in record:
            raise location.error(
                "not supported: TRL passes it to the chat template, swiftstudy does not", key=key
            )


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
