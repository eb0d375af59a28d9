"""Bytes on disk: the one atomic write, the one SHA-256 helper and the one JSON file reader.

An atomic write goes to a uniquely named temporary file beside the target, which is then renamed
over it, so a reader (or a crash) sees the old file or the whole new one, never half of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from swiftstudy.errors import InputError

#: What a temporary file holds: bytes, text (written as UTF-8), or a function that writes it.
Content = bytes | str | Callable[[BinaryIO], None]

_FILE_MODE = 0o644  # mkstemp creates 0600; results are for sharing
_HASH_CHUNK = 1 << 20


def write_temporary(path: Path, content: Content, *, fsync: bool = True) -> Path:
    """Write ``content`` to a new uniquely named temporary file beside ``path``; return its path.

    The caller renames it over ``path`` (``os.replace``), alone or together with others. If
    writing fails, the temporary file is removed and the error raised.

    Args:
        path: The file the temporary will replace (its folder is created if missing).
        content: Bytes, text (UTF-8), or a function that writes into the open binary file.
        fsync: Flush the file to disk first, so a crash after the rename cannot leave it empty;
            a cache that checks what it reads can skip this.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode("utf-8") if isinstance(content, str) else content)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_atomic(path: Path, content: Content, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``content`` atomically (see :func:`write_temporary`)."""
    tmp = write_temporary(path, content, fsync=fsync)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8, newlines as given) atomically."""
    write_atomic(path, text)


def sha256_hex(*parts: bytes | str | Path) -> str:
    """The SHA-256 hex digest of ``parts`` in order: bytes as they are, text as UTF-8, and the
    contents of each :class:`~pathlib.Path` (read in 1 MiB chunks, so any size fits in memory).

    What is hashed beside a file's bytes (its name, its size) is the caller's choice, so every
    digest the package stores is defined where it is computed, and computed here.
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            with part.open("rb") as handle:
                while chunk := handle.read(_HASH_CHUNK):
                    digest.update(chunk)
        else:
            digest.update(part.encode("utf-8") if isinstance(part, str) else part)
    return digest.hexdigest()


def json_sha256(value: Any) -> str:
    """The SHA-256 hex digest of ``value``'s canonical JSON (sorted keys, no spaces, UTF-8)."""
    return sha256_hex(json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")))


def read_json(path: Path, *, key: str | None = None) -> Any:
    """The parsed content of a JSON file; one unreadable or not JSON is an InputError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read JSON: {err}", path=path, key=key) from err
