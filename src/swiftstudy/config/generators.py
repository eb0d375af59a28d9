"""The generators' settings: an OpenAI-compatible endpoint, or a local transformers model.

Declared here, with the specs, so that the ``probes`` command line and the validate judge read
them with the same checks and docs (``swiftstudy.generate`` re-exports both classes).
"""

from __future__ import annotations

from dataclasses import dataclass

from swiftstudy.config.fields import (
    attn_implementation,
    device,
    dtype,
    option,
    revision,
    trust_remote_code,
)
from swiftstudy.config.spec import Spec
from swiftstudy.constants import (
    DEFAULT_API_KEY_ENV,
    DEFAULT_BACKOFF_S,
    DEFAULT_CONCURRENCY,
    DEFAULT_DEVICE,
    DEFAULT_GENERATOR_BATCH_SIZE,
    DEFAULT_GENERATOR_MODEL,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_REQUEST_TIMEOUT_S,
    MAX_BACKOFF_S,
)


@dataclass(frozen=True)
class OpenAISettings(Spec):
    """How to reach an OpenAI-compatible endpoint and decode; ``backoff_s`` (the first retry's
    wait, doubled each retry) and ``max_backoff_s`` (the longest) are no keys."""

    model: str | None = option(None, "The model name; null: the server's only model.")
    base_url: str | None = option(None, "The API root; null: $OPENAI_BASE_URL or the OpenAI API.")
    api_key_env: str = option(DEFAULT_API_KEY_ENV, "The environment variable holding the API key.")
    temperature: float = option(0.0, "Sampling temperature; 0 is greedy.")
    max_new_tokens: int = option(DEFAULT_MAX_NEW_TOKENS, "The most tokens per answer.", min=1)
    seed: int | None = option(None, "Sent as seed, for servers that sample reproducibly.")
    concurrency: int = option(DEFAULT_CONCURRENCY, "Requests in flight at once.", min=1)
    max_retries: int = option(DEFAULT_MAX_RETRIES, "Retries after a 429, 5xx or timeout.", min=0)
    timeout_s: float = option(
        DEFAULT_REQUEST_TIMEOUT_S, "Seconds a request may take.", positive=True, flag="--timeout"
    )
    backoff_s: float = DEFAULT_BACKOFF_S
    max_backoff_s: float = MAX_BACKOFF_S


@dataclass(frozen=True)
class HFSettings(Spec):
    """Which local model (:func:`swiftstudy.model.load_base_model` reads it) and how to decode."""

    model: str = option(
        DEFAULT_GENERATOR_MODEL, "The bundled model's alias, .gguf, folder or hub id."
    )
    revision: str | None = revision()
    trust_remote_code: bool = trust_remote_code()
    attn_implementation: str | None = attn_implementation()
    max_new_tokens: int = option(DEFAULT_MAX_NEW_TOKENS, "The most tokens per answer.", min=1)
    batch_size: int = option(DEFAULT_GENERATOR_BATCH_SIZE, "Prompts decoded together.", min=1)
    dtype: str = option("float32", "The model's dtype.", check=dtype())
    device: str = option(
        DEFAULT_DEVICE, "auto (a GPU if any), cpu, cuda or cuda:N.", check=device()
    )
    threads: int | None = option(None, "CPU threads while decoding; null: torch's.", min=1)
