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

from swiftstudy.constants import (
    DEFAULT_API_KEY_ENV,
    DEFAULT_CONCURRENCY,
    DEFAULT_JUDGE_MAX_NEW_TOKENS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_NUMERIC_TOLERANCE,
    DEFAULT_REQUEST_TIMEOUT_S,
    EVALUATOR_CHOICE,
    EVALUATOR_CONTAINS,
    EVALUATOR_EXACT,
    EVALUATOR_JUDGE,
    EVALUATOR_NUMERIC,
    EVALUATOR_REGEX,
    EVALUATORS,
)
from swiftstudy.validation import SpecValidator, describe_value
from swiftstudy.yamlio import KeyPath

logger = logging.getLogger(__name__)

_JUDGE_KEYS = (
    "model",
    "base_url",
    "api_key_env",
    "max_new_tokens",
    "concurrency",
    "max_retries",
    "timeout_s",
    "cache_dir",
)
#: The options each evaluator takes besides ``name``.
_EVALUATOR_OPTIONS = {
    EVALUATOR_EXACT: ("case_sensitive",),
    EVALUATOR_CONTAINS: ("case_sensitive",),
    EVALUATOR_NUMERIC: ("tolerance", "relative_tolerance"),
    EVALUATOR_REGEX: ("pattern", "case_sensitive"),
    EVALUATOR_CHOICE: ("labels", "case_sensitive"),
    EVALUATOR_JUDGE: _JUDGE_KEYS,
}
_CALLABLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


@dataclass(frozen=True)
class JudgeSpec:
    """The OpenAI-compatible model that grades answers (see ``swiftstudy.generate``).

    Attributes:
        model: The model name; ``None`` uses the server's only model.
        base_url: The API root; ``None`` uses ``$OPENAI_BASE_URL`` or the OpenAI API.
        api_key_env: The environment variable holding the API key.
        max_new_tokens: The most tokens of a verdict.
        concurrency: Requests in flight at once.
        max_retries: Retries of a request after a 429, 5xx, timeout or connection error.
        timeout_s: Seconds before a request times out.
        cache_dir: Where verdicts are cached; ``None`` uses the user cache folder.
    """

    model: str | None = None
    base_url: str | None = None
    api_key_env: str = DEFAULT_API_KEY_ENV
    max_new_tokens: int = DEFAULT_JUDGE_MAX_NEW_TOKENS
    concurrency: int = DEFAULT_CONCURRENCY
    max_retries: int = DEFAULT_MAX_RETRIES
    timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    cache_dir: Path | None = None


@dataclass(frozen=True)
class EvaluatorSpec:
    """How answers are graded; see ``swiftstudy.validate.evaluators``.

    Attributes:
        kind: ``exact``, ``numeric``, ``regex``, ``contains``, ``choice``, ``judge`` or a
            ``module:function`` path.
        case_sensitive: Compare text with its case (exact, contains, regex, choice).
        tolerance: Absolute tolerance of ``numeric``.
        relative_tolerance: Relative tolerance of ``numeric``.
        pattern: The regex of ``regex``.
        labels: The labels of ``choice``.
        judge: The judge model of ``judge``.
    """

    kind: str
    case_sensitive: bool = False
    tolerance: float = DEFAULT_NUMERIC_TOLERANCE
    relative_tolerance: float = 0.0
    pattern: str | None = None
    labels: tuple[str, ...] = ()
    judge: JudgeSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-ready data, as ``config.yaml`` records it."""
        return {
            "name": self.kind,
            "case_sensitive": self.case_sensitive,
            "tolerance": self.tolerance,
            "relative_tolerance": self.relative_tolerance,
            "pattern": self.pattern,
            "labels": list(self.labels),
            "judge": None if self.judge is None else _judge_dict(self.judge),
        }


def _judge_dict(judge: JudgeSpec) -> dict[str, Any]:
    return {
        "model": judge.model,
        "base_url": judge.base_url,
        "api_key_env": judge.api_key_env,
        "max_new_tokens": judge.max_new_tokens,
        "concurrency": judge.concurrency,
        "max_retries": judge.max_retries,
        "timeout_s": judge.timeout_s,
        "cache_dir": None if judge.cache_dir is None else str(judge.cache_dir),
    }


class EvaluatorSpecValidator(SpecValidator):
    """Checks ``eval.evaluator``; raises ``InputError`` at its file, line and key."""

    def evaluator(self, value: Any) -> EvaluatorSpec:
        key_path: KeyPath = ("eval", "evaluator")
        if isinstance(value, str):
            value = {"name": value}
        options = self.mapping(value, key_path, "an evaluator name or {name, ...}")
        if "name" not in options:
            raise self.error("missing required key 'name'", (*key_path, "name"))
        kind = self.string(options["name"], (*key_path, "name"))
        if kind not in EVALUATORS and not _CALLABLE.fullmatch(kind):
            raise self.error(
                f"unknown evaluator {kind!r} (expected one of {', '.join(EVALUATORS)}, "
                "or module:function)",
                (*key_path, "name"),
            )
        allowed = _EVALUATOR_OPTIONS.get(kind, ())
        required = {EVALUATOR_REGEX: ("pattern",), EVALUATOR_CHOICE: ("labels",)}.get(kind, ())
        optional = [k for k in allowed if k not in required]
        self.check_keys(options, ("name", *required), optional, key_path)
        result: dict[str, Any] = {"kind": kind}
        if "case_sensitive" in options:
            result["case_sensitive"] = self.boolean(
                options["case_sensitive"], (*key_path, "case_sensitive")
            )
        for key in ("tolerance", "relative_tolerance"):
            if key in options:
                result[key] = self.number(options[key], (*key_path, key), positive=False)
        if "pattern" in options:
            result["pattern"] = self.regex(options["pattern"], (*key_path, "pattern"))
        if "labels" in options:
            result["labels"] = self.labels(options["labels"], (*key_path, "labels"))
        if kind == EVALUATOR_JUDGE:
            result["judge"] = self.judge(options, key_path)
        return EvaluatorSpec(**result)

    def regex(self, value: Any, key_path: KeyPath) -> str:
        pattern = self.string(value, key_path)
        try:
            compiled = re.compile(pattern)
        except re.error as err:
            raise self.error(f"invalid regex {pattern!r}: {err}", key_path) from None
        if compiled.groups > 1:
            logger.info("%s has %d groups: the first one is compared", pattern, compiled.groups)
        return pattern

    def labels(self, value: Any, key_path: KeyPath) -> tuple[str, ...]:
        if not isinstance(value, list) or len(value) < 2:
            raise self.error(
                f"expected a list of at least 2 labels, got {describe_value(value)}", key_path
            )
        labels = []
        for index, label in enumerate(value):
            if isinstance(label, bool):
                raise self.error(
                    f"YAML reads this label as {label}: write it in quotes", (*key_path, index)
                )
            if isinstance(label, int):
                label = str(label)  # multiple choice by number: [1, 2, 3, 4]
            labels.append(self.string(label, (*key_path, index)))
        labels = tuple(labels)
        if len(set(labels)) != len(labels):
            raise self.error("labels repeat", key_path)
        return labels

    def judge(self, options: dict[Any, Any], key_path: KeyPath) -> JudgeSpec:
        result: dict[str, Any] = {}
        for key in ("model", "base_url"):
            if options.get(key) is not None:
                result[key] = self.string(options[key], (*key_path, key))
        if "api_key_env" in options:
            result["api_key_env"] = self.string(options["api_key_env"], (*key_path, "api_key_env"))
        for key in ("max_new_tokens", "concurrency"):
            if key in options:
                result[key] = self.integer(options[key], (*key_path, key), 1)
        if "max_retries" in options:
            result["max_retries"] = self.integer(
                options["max_retries"], (*key_path, "max_retries"), 0
            )
        if "timeout_s" in options:
            result["timeout_s"] = self.number(
                options["timeout_s"], (*key_path, "timeout_s"), positive=True
            )
        if options.get("cache_dir") is not None:
            result["cache_dir"] = self.path(options["cache_dir"], (*key_path, "cache_dir"))
        return JudgeSpec(**result)
