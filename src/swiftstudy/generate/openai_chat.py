"""A generator backed by any OpenAI-compatible chat-completions endpoint, via the ``openai`` client.

vLLM, llama.cpp's server, Ollama and hosted APIs all speak this protocol. Requests run on a thread
pool (``concurrency`` at a time); a 429, a 5xx, a timeout or a dropped connection is retried with
exponential backoff (the server's ``Retry-After`` wins when it sends one); any other error ends the
run, and the answers that arrived before it stay cached. The API key is read from an environment
variable when the generator is built and is never logged, cached or returned by ``settings``.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from swiftstudy.config.generators import OpenAISettings
from swiftstudy.errors import InputError, first_line
from swiftstudy.generate.base import GenerationError, Generator, Prompt, messages_to_json

logger = logging.getLogger(__name__)

#: Sent when the key variable is unset: local servers ignore the key, hosted ones answer 401.
_NO_KEY = "no-key"


class OpenAIChatGenerator(Generator):
    """Answers prompts with an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        settings: The endpoint, model, decoding and retry settings.

    Attributes:
        requests: Chat-completion requests sent so far, retries included.
    """

    def __init__(self, settings: OpenAISettings) -> None:
        import openai

        if settings.concurrency < 1 or settings.max_retries < 0 or settings.max_new_tokens < 1:
            raise ValueError("concurrency and max_new_tokens must be ≥ 1, max_retries ≥ 0")
        self.config = settings
        # Retries are ours (logged, with our backoff), so the client's own are off.
        self._client = openai.OpenAI(
            api_key=os.environ.get(settings.api_key_env) or _NO_KEY,
            base_url=settings.base_url,
            timeout=settings.timeout_s,
            max_retries=0,
        )
        self._model = settings.model
        self._lock = threading.Lock()
        self.requests = 0

    @property
    def base_url(self) -> str:
        return str(self._client.base_url).rstrip("/")

    @property
    def model(self) -> str:
        """The model name; asks the server for its only model the first time if none was set."""
        if self._model is None:
            self._model = self._only_served_model()
        return self._model

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "generator": "openai",
            "base_url": self.base_url,
            "model": self.model,
            "temperature": self.config.temperature,
            "max_new_tokens": self.config.max_new_tokens,
            "seed": self.config.seed,
        }

    def iter_generate(self, prompts: Sequence[Prompt]) -> Iterator[tuple[int, str]]:
        if not prompts:
            return
        model = self.model
        pending: dict[Future[str], int] = {}
        executor = ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="openai")
        try:
            queue = iter(enumerate(prompts))
            # Submit lazily, ``concurrency`` at a time, so a failure stops the run early.
            for index, prompt in itertools.islice(queue, self.config.concurrency):
                pending[executor.submit(self._complete, model, prompt)] = index
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()
                    for index, prompt in itertools.islice(queue, 1):  # the next prompt, if any
                        pending[executor.submit(self._complete, model, prompt)] = index
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def _complete(self, model: str, prompt: Prompt) -> str:
        """One chat completion, retried on 429, 5xx, timeouts and connection errors."""
        import openai

        extra = {} if self.config.seed is None else {"seed": self.config.seed}
        for attempt in range(self.config.max_retries + 1):
            try:
                with self._lock:
                    self.requests += 1
                response = self._client.chat.completions.create(
                    model=model,
                    messages=messages_to_json(prompt),
                    temperature=self.config.temperature,
                    max_tokens=self.config.max_new_tokens,
                    **extra,
                )
            except (
                openai.RateLimitError,
                openai.InternalServerError,
                openai.APIConnectionError,
            ) as e:
                if attempt == self.config.max_retries:
                    raise GenerationError(
                        f"{self.base_url}: {_describe(e)}; gave up after "
                        f"{self.config.max_retries} retries"
                    ) from e
                delay = self._backoff(attempt, e)
                logger.warning("%s: %s; retrying in %.1f s", self.base_url, _describe(e), delay)
                time.sleep(delay)
                continue
            except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                raise InputError(
                    f"{self.base_url} refused the API key ({_describe(e)}): set it in "
                    f"${self.config.api_key_env}",
                    key="api_key_env",
                ) from e
            except openai.NotFoundError as e:
                raise InputError(
                    f"{self.base_url}/chat/completions: not found for model {model!r} "
                    f"({_describe(e)})",
                    key="model",
                ) from e
            except openai.APIStatusError as e:
                raise GenerationError(f"{self.base_url}: {_describe(e)}") from e
            if not response.choices:
                return ""
            return response.choices[0].message.content or ""
        raise AssertionError("unreachable")  # the loop returns or raises

    def _backoff(self, attempt: int, error: Exception) -> float:
        """Seconds to wait before retry ``attempt + 1``: Retry-After, else jittered doubling."""
        response = getattr(error, "response", None)
        header = None if response is None else response.headers.get("retry-after")
        if header is not None:
            try:
                return min(max(float(header), 0.0), self.config.max_backoff_s)
            except ValueError:
                pass  # an HTTP date: fall back to our own schedule
        delay = min(self.config.backoff_s * 2**attempt, self.config.max_backoff_s)
        return delay * random.uniform(0.5, 1.0)

    def _only_served_model(self) -> str:
        """The one model the server lists under ``/models``; asks the user to choose otherwise."""
        import openai

        try:
            names = [model.id for model in self._client.models.list()]
        except openai.OpenAIError as e:
            raise GenerationError(f"{self.base_url}/models: {_describe(e)}") from e
        if len(names) != 1:
            listed = ", ".join(names[:20]) or "none"
            raise InputError(
                f"{self.base_url} serves {len(names)} models ({listed}): choose one", key="model"
            )
        logger.info("using %s, the model %s serves", names[0], self.base_url)
        return names[0]


def _describe(error: Exception) -> str:
    """A one-line description of an ``openai`` error: the status and the server's message."""
    status = getattr(error, "status_code", None)
    message = first_line(error)
    return (
        f"HTTP {status}: {message}" if status is not None else f"{type(error).__name__}: {message}"
    )
