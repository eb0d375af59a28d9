"""Generators: chat prompts in, text answers out, each answer cached on disk.

``OpenAIChatGenerator`` talks to any OpenAI-compatible endpoint, ``HFGenerator`` runs a local
transformers model, ``FunctionGenerator`` wraps a Python function; ``CachedGenerator`` puts a
``GenerationCache`` in front of any of them::

    from swiftstudy.data import Message
    from swiftstudy.generate import CachedGenerator, GenerationCache, HFGenerator, HFSettings

    generator = CachedGenerator(HFGenerator(HFSettings(max_new_tokens=64)), GenerationCache())
    [answer] = generator.generate([[Message("user", "What is 17 + 25?")]])
"""

from swiftstudy.generate.base import FunctionGenerator, GenerationError, Generator, Prompt
from swiftstudy.generate.cache import CachedGenerator, GenerationCache
from swiftstudy.generate.hf import HFGenerator, HFSettings
from swiftstudy.generate.openai_chat import OpenAIChatGenerator, OpenAISettings

__all__ = [
    "CachedGenerator",
    "FunctionGenerator",
    "GenerationCache",
    "GenerationError",
    "Generator",
    "HFGenerator",
    "HFSettings",
    "OpenAIChatGenerator",
    "OpenAISettings",
    "Prompt",
]
