"""Probe sets: a strategy's templates applied to reference examples, through a generator.

The ``swiftstudy probes`` command, beside ``study/``, ``train/`` and ``validate/``; the strategies
themselves (templates as package data, parsers) are in ``swiftstudy.data.strategies``.
"""

from swiftstudy.probes.build import (
    ProbeFailure,
    ProbesResult,
    build_probes,
    output_paths,
    probe_record,
)

__all__ = ["ProbeFailure", "ProbesResult", "build_probes", "output_paths", "probe_record"]
