"""Evaluators: grade a generated answer against the query's golden response, 1 or 0.

Each evaluator reads something out of the answer (a number, a label, a regex match) and compares
it with the same thing read out of the golden response, so a golden answer written as a sentence
("... So the answer is 42.") works as well as a bare one ("42"). Text is compared after
:func:`normalize_text`: Unicode NFKC, surrounding white space and one trailing full stop removed,
inner white space collapsed, case folded unless ``case_sensitive``.

* ``exact``: the normalized answer equals the normalized golden response.
* ``numeric``: the last number in the answer equals the last number in the golden response,
  within ``tolerance`` (absolute) or ``relative_tolerance``; ``1,234`` reads as 1234.
* ``regex``: the last match of ``pattern`` (its first group if it has one) in the answer equals
  the one in the golden response (or the whole golden response if the pattern does not match it).
* ``contains``: the normalized golden response occurs in the normalized answer as whole words.
* ``choice``: the label of ``labels`` that the answer mentions last is the golden one.
* ``module:function``: a Python function ``f(answer, golden) -> bool`` (1 / 0 accepted).
* ``judge``: an OpenAI-compatible model, see :mod:`swiftstudy.validate.judge`.

Golden responses are checked before anything is trained: a ``numeric`` golden without a number,
or a ``choice`` golden without a label, is an error at its file and line.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import re
import sys
import unicodedata
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from swiftstudy.constants import (
    EVALUATOR_CHOICE,
    EVALUATOR_CONTAINS,
    EVALUATOR_EXACT,
    EVALUATOR_JUDGE,
    EVALUATOR_NUMERIC,
    EVALUATOR_REGEX,
)
from swiftstudy.errors import InputError
from swiftstudy.validate.evaluator_spec import EvaluatorSpec, JudgeSpec
from swiftstudy.validate.grading import EvalQuery, Evaluator, Grade

#: A number: optional minus sign, digits with optional thousands commas, optional decimals and
#: exponent; not glued to a word or a decimal point before it ("x2", ".5" are not read as 2, 5).
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")


class PointwiseEvaluator(Evaluator):
    """An evaluator that grades each answer on its own."""

    def grade_all(self, queries: Sequence[EvalQuery], answers: Sequence[str]) -> list[Grade]:
        if len(queries) != len(answers):
            raise ValueError(f"{len(queries)} queries but {len(answers)} answers")
        return [self.grade(a, q) for q, a in zip(queries, answers, strict=True)]

    @abstractmethod
    def grade(self, answer: str, query: EvalQuery) -> Grade:
        """Grade one answer."""


def normalize_text(text: str, *, case_sensitive: bool = False) -> str:
    """NFKC, trimmed, one trailing full stop dropped, white space collapsed, case folded."""
    text = " ".join(unicodedata.normalize("NFKC", text).split())
    if text.endswith("."):
        text = text[:-1].rstrip()
    return text if case_sensitive else text.casefold()


class ExactEvaluator(PointwiseEvaluator):
    """The normalized answer equals the normalized golden response."""

    def __init__(self, *, case_sensitive: bool = False) -> None:
        self.case_sensitive = case_sensitive

    def grade(self, answer: str, query: EvalQuery) -> Grade:
        got = normalize_text(answer, case_sensitive=self.case_sensitive)
        want = normalize_text(query.golden, case_sensitive=self.case_sensitive)
        return Grade(got == want, got)


def extract_last_number(text: str) -> float | None:
    """The last number written in ``text`` (``1,234.5`` → 1234.5), or ``None``."""
    matches = _NUMBER.findall(unicodedata.normalize("NFKC", text).replace("−", "-"))
    return float(matches[-1].replace(",", "")) if matches else None


class NumericEvaluator(PointwiseEvaluator):
    """The last number of the answer equals the last number of the golden response."""

    def __init__(self, *, tolerance: float, relative_tolerance: float = 0.0) -> None:
        self.tolerance = tolerance
        self.relative_tolerance = relative_tolerance

    def check(self, queries: Sequence[EvalQuery]) -> None:
        for query in queries:
            if extract_last_number(query.golden) is None:
                raise _golden_error(query, "the numeric evaluator finds no number in it")

    def grade(self, answer: str, query: EvalQuery) -> Grade:
        got = extract_last_number(answer)
        want = extract_last_number(query.golden)
        if got is None or want is None:
            return Grade(False, None)
        close = math.isclose(got, want, rel_tol=self.relative_tolerance, abs_tol=self.tolerance)
        return Grade(close, _format_number(got))


class RegexEvaluator(PointwiseEvaluator):
    """The pattern's last match in the answer equals its last match in the golden response."""

    def __init__(self, pattern: str, *, case_sensitive: bool = False) -> None:
        self.pattern = re.compile(pattern)
        self.case_sensitive = case_sensitive

    def extract(self, text: str) -> str | None:
        """The last match of the pattern (its first group when it has groups), or ``None``."""
        matches = list(self.pattern.finditer(text))
        return matches[-1].group(1 if self.pattern.groups else 0) if matches else None

    def grade(self, answer: str, query: EvalQuery) -> Grade:
        got = self.extract(answer)
        if got is None:
            return Grade(False, None)
        want = self.extract(query.golden)
        want = query.golden if want is None else want
        same = normalize_text(got, case_sensitive=self.case_sensitive) == normalize_text(
            want, case_sensitive=self.case_sensitive
        )
        return Grade(same, got)


class ContainsEvaluator(PointwiseEvaluator):
    """The normalized golden response occurs in the normalized answer, as whole words."""

    def __init__(self, *, case_sensitive: bool = False) -> None:
        self.case_sensitive = case_sensitive

    def grade(self, answer: str, query: EvalQuery) -> Grade:
        want = normalize_text(query.golden, case_sensitive=self.case_sensitive)
        got = normalize_text(answer, case_sensitive=self.case_sensitive)
        found = _word_pattern(want).search(got)
        return Grade(found is not None, None if found is None else found.group(0))


class ChoiceEvaluator(PointwiseEvaluator):
    """The label the answer mentions last (as whole words) is the golden response's label."""

    def __init__(self, labels: Sequence[str], *, case_sensitive: bool = False) -> None:
        if not labels:
            raise ValueError("the choice evaluator needs labels")
        self.labels = tuple(labels)
        self.case_sensitive = case_sensitive
        # Longer labels first, so "very positive" is found before "positive" at the same place;
        # each label is a group of its own, so a match says which label it is.
        self._ordered = sorted(self.labels, key=len, reverse=True)
        flags = 0 if case_sensitive else re.IGNORECASE
        self._pattern = re.compile(
            "|".join(f"(?<!\\w)({re.escape(label)})(?!\\w)" for label in self._ordered), flags
        )

    def find_label(self, text: str) -> str | None:
        """The label mentioned last in ``text``, or ``None``."""
        matches = list(self._pattern.finditer(unicodedata.normalize("NFKC", text)))
        return self._ordered[matches[-1].lastindex - 1] if matches else None

    def check(self, queries: Sequence[EvalQuery]) -> None:
        for query in queries:
            if self.find_label(query.golden) is None:
                raise _golden_error(
                    query, f"names none of the choice labels ({', '.join(self.labels)})"
                )

    def grade(self, answer: str, query: EvalQuery) -> Grade:
        got = self.find_label(answer)
        return Grade(got is not None and got == self.find_label(query.golden), got)


class CallableEvaluator(PointwiseEvaluator):
    """A Python function ``f(answer: str, golden: str) -> bool`` (1 or 0 accepted too).

    Args:
        function: The function.
        name: Its ``module:function`` path, for messages.
    """

    def __init__(self, function: Callable[[str, str], Any], name: str) -> None:
        self.function = function
        self.name = name

    def grade(self, answer: str, query: EvalQuery) -> Grade:
        verdict = self.function(answer, query.golden)
        if isinstance(verdict, (int, float)) and verdict in (0, 1):  # bool is an int
            return Grade(bool(verdict))
        raise InputError(
            f"{self.name} returned {verdict!r} for query {query.example.id!r}: expected a bool, "
            "1 or 0",
            key="eval.evaluator",
        )


def load_callable(path: str, base_dir: Path) -> Callable[[str, str], Any]:
    """Import ``module:function``; a module not on ``sys.path`` is looked for in ``base_dir``.

    ``grading:score`` finds ``grading.py`` beside the spec file without changing ``sys.path``.

    Raises:
        InputError: The module or function cannot be found, or is not callable with two
            arguments.
    """
    module_name, _, function_name = path.partition(":")
    module = _import_module(module_name, base_dir)
    function = module
    for part in function_name.split("."):
        function = getattr(function, part, None)
        if function is None:
            raise InputError(f"{module_name} has no {function_name!r}", key="eval.evaluator")
    if not callable(function):
        raise InputError(f"{path} is not callable", key="eval.evaluator")
    try:
        inspect.signature(function).bind("answer", "golden")
    except TypeError as err:
        raise InputError(
            f"{path} must take two arguments (answer, golden): {err}", key="eval.evaluator"
        ) from err
    except ValueError:
        pass  # a builtin without a signature: it will tell us when called
    return function


def _import_module(name: str, base_dir: Path) -> Any:
    local = base_dir.joinpath(*name.split(".")).with_suffix(".py")
    if local.is_file():
        unique = f"swiftstudy_evaluator_{abs(hash(str(local)))}"
        spec = importlib.util.spec_from_file_location(unique, local)
        if spec is None or spec.loader is None:
            raise InputError(f"cannot import {local}", key="eval.evaluator")
        module = importlib.util.module_from_spec(spec)
        sys.modules[unique] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[unique]
            raise InputError(f"importing {local} failed: {err}", key="eval.evaluator") from err
        return module
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise InputError(
            f"cannot import {name!r} ({err}); not a module on sys.path nor {local}",
            key="eval.evaluator",
        ) from err


def _golden_error(query: EvalQuery, message: str) -> InputError:
    return InputError(message, path=query.example.origin, key="response")


def _word_pattern(text: str) -> re.Pattern[str]:
    """``text`` as a regex that only matches whole words at its word-character ends."""
    start = r"(?<!\w)" if text[:1].isalnum() or text[:1] == "_" else ""
    end = r"(?!\w)" if text[-1:].isalnum() or text[-1:] == "_" else ""
    return re.compile(start + re.escape(text) + end)


def _format_number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def build_evaluator(spec: EvaluatorSpec, *, base_dir: Path) -> Evaluator:
    """The evaluator a spec describes; imports a ``module:function`` one.

    Args:
        spec: The evaluator's spec.
        base_dir: The spec file's folder, where a ``module:function``'s module may live.

    Raises:
        InputError: A callable evaluator cannot be imported.
    """
    if spec.kind == EVALUATOR_EXACT:
        return ExactEvaluator(case_sensitive=spec.case_sensitive)
    if spec.kind == EVALUATOR_NUMERIC:
        return NumericEvaluator(
            tolerance=spec.tolerance, relative_tolerance=spec.relative_tolerance
        )
    if spec.kind == EVALUATOR_REGEX:
        return RegexEvaluator(spec.pattern or "", case_sensitive=spec.case_sensitive)
    if spec.kind == EVALUATOR_CONTAINS:
        return ContainsEvaluator(case_sensitive=spec.case_sensitive)
    if spec.kind == EVALUATOR_CHOICE:
        return ChoiceEvaluator(spec.labels, case_sensitive=spec.case_sensitive)
    if spec.kind == EVALUATOR_JUDGE:
        # Imported here: the judge needs the ``openai`` client, the others nothing.
        from swiftstudy.validate.judge import JudgeEvaluator, build_judge_generator

        return JudgeEvaluator(build_judge_generator(spec.judge or JudgeSpec()))
    return CallableEvaluator(load_callable(spec.kind, base_dir), spec.kind)
