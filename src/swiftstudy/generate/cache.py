"""An on-disk cache of generator answers, so a rerun or a crashed run never asks twice.

An answer is keyed by the SHA-256 of the generator's ``settings`` and the exact messages sent.
The messages are what a strategy's template renders from a reference, so the key covers the
strategy, its template, the generator and the input: change any of them and the prompt or the
settings change with it. Each answer is one small JSON file, written atomically as soon as it
arrives (``<root>/<key[:2]>/<key>.json``): a crash loses at most the answers in flight.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from swiftstudy.constants import GENERATION_CACHE_SUBDIR
from swiftstudy.fileio import json_sha256, write_text_atomic
from swiftstudy.generate.base import Generator, Prompt, messages_to_json
from swiftstudy.model.loading import default_cache_dir

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1


class GenerationCache:
    """Generator answers stored as one JSON file each under ``root``.

    Args:
        root: The cache folder; ``None`` means ``<default cache dir>/generations``
            (``$SWIFTSTUDY_CACHE`` or the user cache folder).
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = default_cache_dir() / GENERATION_CACHE_SUBDIR if root is None else Path(root)

    @staticmethod
    def key(settings: dict[str, Any], prompt: Prompt) -> str:
        """The cache key of one request: a hex SHA-256 of its settings and messages."""
        return json_sha256(_request(settings, prompt))

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        """The stored answer, or ``None`` if there is none (or it is unreadable)."""
        path = self.path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            logger.warning("ignoring unreadable cache entry %s: %s", path, error)
            return None
        text = entry.get("text") if isinstance(entry, dict) else None
        return text if isinstance(text, str) else None

    def put(self, key: str, settings: dict[str, Any], prompt: Prompt, text: str) -> None:
        """Store one answer, with its request for anyone reading the cache by hand."""
        entry = {**_request(settings, prompt), "text": text}
        write_text_atomic(self.path(key), json.dumps(entry, ensure_ascii=False, indent=1) + "\n")


class CachedGenerator(Generator):
    """A generator whose answers are read from, and saved to, a :class:`GenerationCache`.

    Only the prompts missing from the cache reach the wrapped generator; each of its answers is
    saved the moment it arrives.

    Args:
        generator: The generator that answers cache misses.
        cache: Where answers are kept.

    Attributes:
        hits: Answers read from the cache so far.
        misses: Answers asked of the wrapped generator so far.
    """

    def __init__(self, generator: Generator, cache: GenerationCache) -> None:
        self.generator = generator
        self.cache = cache
        self.hits = 0
        self.misses = 0

    @property
    def settings(self) -> dict[str, Any]:
        return self.generator.settings

    @property
    def device(self) -> str | None:
        return self.generator.device

    def iter_generate(self, prompts: Sequence[Prompt]) -> Iterator[tuple[int, str]]:
        settings = self.settings
        keys = [self.cache.key(settings, prompt) for prompt in prompts]
        missing: list[int] = []
        for index, key in enumerate(keys):
            text = self.cache.get(key)
            if text is None:
                missing.append(index)
            else:
                self.hits += 1
                yield index, text
        if not missing:
            return
        logger.info("%d of %d answers cached; generating %d", self.hits, len(prompts), len(missing))
        for position, text in self.generator.iter_generate([prompts[i] for i in missing]):
            index = missing[position]
            self.cache.put(keys[index], settings, prompts[index], text)
            self.misses += 1
            yield index, text


def _request(settings: dict[str, Any], prompt: Prompt) -> dict[str, Any]:
    """What a cache entry is keyed on: the format version, the settings and the messages."""
    return {"v": _FORMAT_VERSION, "settings": settings, "messages": messages_to_json(prompt)}
