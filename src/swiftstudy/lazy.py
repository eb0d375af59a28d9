"""Lazy public names for a package ``__init__``: each is imported from its module on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, sources: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's module ``__getattr__`` and ``__dir__`` (PEP 562) serving ``sources``.

    Args:
        package: The package's ``__name__``.
        sources: Public name -> the module to import it from.

    Returns:
        ``(__getattr__, __dir__)``; a name once imported is stored in the package's namespace,
        so later lookups do not come back here.
    """

    def __getattr__(name: str) -> Any:
        source = sources.get(name)
        if source is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *sources})

    return __getattr__, __dir__
