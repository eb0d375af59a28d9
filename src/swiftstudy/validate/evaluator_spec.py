"""The ``eval.evaluator`` section of a validate spec: which evaluator, with which options.

Example::

    evaluator: numeric                                   # a name alone
    evaluator: {name: numeric, tolerance: 0.01}
    evaluator: {name: choice, labels: [positive, negative]}
    evaluator: {name: regex, pattern: 'answer is (\\w+)'}
    evaluator: {name: judge, model: gpt-4o, base_url: 'http://127.0.0.1:8080/v1'}
    evaluator: grading:score                             # grading.py beside the spec, or a module

Each evaluator accepts only its own options; errors name the file, line and key.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swiftstudy.config.fields import Check, listed, option, regex
from swiftstudy.config.generators import OpenAISettings
from swiftstudy.config.reader import SpecValidator
from swiftstudy.config.spec import Spec, read_spec, spec_options
from swiftstudy.config.yamlio import KeyPath
from swiftstudy.constants import (
    DEFAULT_JUDGE_MAX_NEW_TOKENS,
    DEFAULT_NUMERIC_TOLERANCE,
    EVALUATOR_CHOICE,
    EVALUATOR_CONTAINS,
    EVALUATOR_EXACT,
    EVALUATOR_JUDGE,
    EVALUATOR_NUMERIC,
    EVALUATOR_REGEX,
    EVALUATORS,
)

logger = logging.getLogger(__name__)

_CALLABLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


@dataclass(frozen=True)
class JudgeSpec(OpenAISettings):
    """The OpenAI-compatible model that grades answers: the generator's settings, greedy (no
    ``temperature`` or ``seed`` key), a short verdict, and where verdicts are cached."""

    temperature: float = 0.0
    max_new_tokens: int = option(
        DEFAULT_JUDGE_MAX_NEW_TOKENS, "The most tokens of a verdict.", min=1
    )
    seed: int | None = None
    cache_dir: Path | None = option(None, "Where verdicts are cached; null: the user cache folder.")


def _pattern(reader: SpecValidator, value: Any, key_path: KeyPath) -> str:
    pattern = regex(reader, value, key_path)
    groups = re.compile(pattern).groups
    if groups > 1:
        logger.info("%s has %d groups: the first one is compared", pattern, groups)
    return pattern


def _label(reader: SpecValidator, label: Any, key_path: KeyPath) -> str:
    if isinstance(label, bool):
        raise reader.error(f"YAML reads this label as {label}: write it in quotes", key_path)
    # Multiple choice by number: [1, 2, 3, 4].
    return reader.string(str(label) if isinstance(label, int) else label, key_path)


def _labels(reader: SpecValidator, value: Any, key_path: KeyPath) -> tuple[str, ...]:
    labels = listed(_label, "labels", least=2)(reader, value, key_path)
    if len(set(labels)) != len(labels):
        raise reader.error("labels repeat", key_path)
    return labels


@dataclass(frozen=True)
class EvaluatorSpec(Spec):
    """How answers are graded (see ``swiftstudy.validate.evaluators``); each evaluator takes only
    its own options, and ``judge`` the keys of :class:`JudgeSpec` beside ``name``."""

    kind: str = option(
        doc="exact, numeric, regex, contains, choice, judge, or module:function.", key="name"
    )
    case_sensitive: bool = option(False, "Compare with case (exact, contains, regex, choice).")
    tolerance: float = option(DEFAULT_NUMERIC_TOLERANCE, "Absolute tolerance of numeric.")
    relative_tolerance: float = option(0.0, "Relative tolerance of numeric.")
    pattern: str | None = option(None, "The regex of regex.", check=_pattern)
    labels: tuple[str, ...] = option((), "The labels of choice.", check=_labels)
    judge: JudgeSpec | None = option(
        None,
        "judge: the grading model, from the keys below.",
        check=Check(lambda reader, value, key_path: value, spec=JudgeSpec, each=None),
    )


#: The options each evaluator takes besides ``name``.
_EVALUATOR_OPTIONS = {
    EVALUATOR_EXACT: ("case_sensitive",),
    EVALUATOR_CONTAINS: ("case_sensitive",),
    EVALUATOR_NUMERIC: ("tolerance", "relative_tolerance"),
    EVALUATOR_REGEX: ("pattern", "case_sensitive"),
    EVALUATOR_CHOICE: ("labels", "case_sensitive"),
    EVALUATOR_JUDGE: tuple(key for key, _, _ in spec_options(JudgeSpec)),
}
_REQUIRED_OPTIONS = {EVALUATOR_REGEX: ("pattern",), EVALUATOR_CHOICE: ("labels",)}


def read_evaluator(reader: SpecValidator, value: Any, key_path: KeyPath) -> EvaluatorSpec:
    """``eval.evaluator``: a name, or ``{name, ...}`` with that evaluator's options."""
    if isinstance(value, str):
        value = {"name": value}
    body = reader.mapping(value, key_path, "an evaluator name or {name, ...}")
    if "name" not in body:
        raise reader.error("missing required key 'name'", (*key_path, "name"))
    kind = reader.string(body["name"], (*key_path, "name"))
    if kind not in EVALUATORS and not _CALLABLE.fullmatch(kind):
        raise reader.error(
            f"unknown evaluator {kind!r} (expected one of {', '.join(EVALUATORS)}, "
            "or module:function)",
            (*key_path, "name"),
        )
    required = _REQUIRED_OPTIONS.get(kind, ())
    optional = [k for k in _EVALUATOR_OPTIONS.get(kind, ()) if k not in required]
    reader.check_keys(body, ("name", *required), optional, key_path)
    if kind != EVALUATOR_JUDGE:
        return read_spec(EvaluatorSpec, body, reader, key_path)
    judge = read_spec(JudgeSpec, {k: v for k, v in body.items() if k != "name"}, reader, key_path)
    return EvaluatorSpec(kind, judge=judge)
