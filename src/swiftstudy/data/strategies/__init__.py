"""Strategies: YAML files with Jinja templates that turn reference examples into probe examples.

The built-ins (``cot``, ``clarify``, ``eval``, ``similar``: the paper's Table 3) are YAML files in
this package; a custom strategy is a YAML file of the same form (see :mod:`.strategy`)::

    from swiftstudy.data.strategies import load_strategy

    strategy = load_strategy("cot")            # or load_strategy("my-strategy.yaml")
"""

from swiftstudy.data.strategies.apply import (
    ParseFailure,
    Probe,
    build_context,
    render_generation_prompt,
    render_probes,
)
from swiftstudy.data.strategies.strategy import (
    GenerationStep,
    OutputSpec,
    Strategy,
    builtin_strategy_path,
    load_strategy,
)

__all__ = [
    "GenerationStep",
    "OutputSpec",
    "ParseFailure",
    "Probe",
    "Strategy",
    "build_context",
    "builtin_strategy_path",
    "load_strategy",
    "render_generation_prompt",
    "render_probes",
]
