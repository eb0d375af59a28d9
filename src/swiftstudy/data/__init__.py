"""Data: examples and their loaders, and chat rendering into token ids with completion masks."""

from swiftstudy.data.examples import Example, Message, load_examples
from swiftstudy.data.render import TokenizedExample, tokenize_example, tokenize_examples

__all__ = [
    "Example",
    "Message",
    "TokenizedExample",
    "load_examples",
    "tokenize_example",
    "tokenize_examples",
]
