"""The generator interface: a list of chat prompts in, one text answer per prompt out.

A generator is any object that answers chat prompts: an OpenAI-compatible server
(:mod:`swiftstudy.generate.openai_chat`), a local transformers model (:mod:`swiftstudy.generate.hf`)
or a plain Python function (:class:`FunctionGenerator`, the naive one kept for tests). Its
``settings`` say what determines its answers, so :mod:`swiftstudy.generate.cache` can key answers
on them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from swiftstudy.data.examples import Message

#: A chat prompt: the messages sent to the generator, in order.
Prompt = Sequence[Message]


class GenerationError(RuntimeError):
    """A generator could not answer: the server is unreachable, retries ran out, a 4xx reply..."""


class Generator(ABC):
    """Answers chat prompts with text.

    Subclasses implement :meth:`iter_generate` (answers in any order, as they arrive, so callers
    can save each one at once) and :attr:`settings`.
    """

    @property
    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """What determines the answers (kind, model, decoding) as JSON values; never a secret."""

    @abstractmethod
    def iter_generate(self, prompts: Sequence[Prompt]) -> Iterator[tuple[int, str]]:
        """Answer every prompt, yielding ``(index into prompts, answer)`` as answers arrive.

        Raises:
            GenerationError: A prompt could not be answered.
        """

    @property
    def device(self) -> str | None:
        """The device a local model answers on, once loaded (``cuda:0``, ``cpu``); ``None``
        before, and for a remote one."""
        return None

    def generate(
        self, prompts: Sequence[Prompt], on_answer: Callable[[], object] | None = None
    ) -> list[str]:
        """Answer every prompt; the answers are in the order of ``prompts``.

        Args:
            prompts: The prompts.
            on_answer: Called as each answer arrives (a progress bar's ``update``).

        Raises:
            GenerationError: A prompt could not be answered.
        """
        answers: list[str | None] = [None] * len(prompts)
        for index, text in self.iter_generate(prompts):
            answers[index] = text
            if on_answer is not None:
                on_answer()
        missing = [i for i, text in enumerate(answers) if text is None]
        if missing:
            raise GenerationError(f"no answer for prompts {missing[:10]}")
        return [text for text in answers if text is not None]


class FunctionGenerator(Generator):
    """A generator that calls a Python function once per prompt, in order.

    Args:
        function: Maps a prompt's messages to the answer.
        name: Names the function in :attr:`settings` (and so in cache keys).
    """

    def __init__(self, function: Callable[[Prompt], str], name: str) -> None:
        self.function = function
        self.name = name
        self.calls = 0

    @property
    def settings(self) -> dict[str, Any]:
        return {"generator": "function", "name": self.name}

    def iter_generate(self, prompts: Sequence[Prompt]) -> Iterator[tuple[int, str]]:
        for index, prompt in enumerate(prompts):
            self.calls += 1
            yield index, self.function(prompt)


def messages_to_json(prompt: Prompt) -> list[dict[str, str]]:
    """A prompt as OpenAI-style ``[{"role": ..., "content": ...}]`` dicts."""
    return [{"role": message.role, "content": message.content} for message in prompt]
