"""Strategy files: YAML with Jinja templates that turn a reference example into probe examples.

A strategy has up to three steps, each a template rendered per reference:

1. ``variables`` (optional): Jinja expressions evaluated in order, e.g. a verdict from ``label``;
2. ``generation`` (optional): the ``prompt`` (and ``system``) sent to a generator, few-shot
   ``examples`` sent before it, and a ``parse`` regex the answer must match; the regex's named
   groups become variables;
3. ``outputs``: one or more kinds of probe, each a ``query`` and a ``response`` template.

Templates run in Jinja's sandbox with strict undefined variables, and every variable a template
names is checked when the file is loaded, so a typo fails at once with the file, line and key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from swiftstudy.config.reader import SpecValidator, absolute_path, describe_value
from swiftstudy.config.yamlio import KeyPath, load_yaml
from swiftstudy.constants import BUILTIN_STRATEGIES
from swiftstudy.errors import InputError
from swiftstudy.fileio import sha256_hex

#: Variables every template may use, from the reference record.
REFERENCE_VARIABLES = ("id", "task", "query", "response", "messages", "label", "record")
#: The generator's answer, for ``outputs`` templates (with the parse regex's named groups).
GENERATION_VARIABLE = "generation"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GROUP = re.compile(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>")
#: Output kinds that would collide with the files written beside a probe file.
_RESERVED_KINDS = ("config", "failures")


class TemplateFailure(Exception):
    """Raised by ``error(message)`` in a template: the reference itself is bad input."""


def _raise_error(message: Any) -> None:
    raise TemplateFailure(str(message))


@dataclass(frozen=True)
class Demonstration:
    """A few-shot example: a reference record and the answer a generator should give for it.

    Attributes:
        record: ``query``, ``response`` and any other fields (``label``...) of a reference.
        answer: The ideal answer, sent as the assistant turn after the rendered prompt.
        line: Its line in the strategy file.
    """

    record: dict[str, Any]
    answer: str
    line: int | None


@dataclass(frozen=True)
class GenerationStep:
    """What a generator is asked, and the shape its answer must have.

    Attributes:
        prompt: The user message template.
        system: The system message template, if any.
        parse: A regex template the answer must match (``re.search``); its named groups become
            variables of the output templates. ``None`` accepts any non-blank answer.
        expected: Says what ``parse`` wants, in failure reports ("expected ...").
        groups: The named groups of ``parse``.
        examples: Few-shot demonstrations: each is rendered with ``prompt`` as a user turn and
            followed by its answer as an assistant turn, before the reference's own prompt.
    """

    prompt: str
    system: str | None
    parse: str | None
    expected: str | None
    groups: tuple[str, ...]
    examples: tuple[Demonstration, ...] = ()


@dataclass(frozen=True)
class OutputSpec:
    """One kind of probe a strategy writes for each reference.

    Attributes:
        kind: Its name, in each record's ``kind`` field and in the file name of extra kinds.
        query: The template of the probe's last prompt message (the reference's earlier messages,
            e.g. a system prompt, are kept).
        response: The template of the probe's response.
    """

    kind: str
    query: str
    response: str


@dataclass(frozen=True)
class Strategy:
    """A loaded, checked strategy file.

    Attributes:
        name: The strategy's name, written in each probe's ``strategy`` field.
        description: One line for people.
        variables: ``(name, Jinja expression)`` pairs, evaluated in order.
        generation: The generator step, or ``None`` when the outputs need no generator.
        outputs: The kinds of probe written per reference; the first is the main one.
        source: The YAML file.
        sha256: The SHA-256 of the file's bytes, recorded beside the probes.
    """

    name: str
    description: str
    variables: tuple[tuple[str, str], ...]
    generation: GenerationStep | None
    outputs: tuple[OutputSpec, ...]
    source: Path
    sha256: str
    lines: dict[KeyPath, int] = field(repr=False, compare=False, default_factory=dict)
    compiled: dict[KeyPath, Any] = field(repr=False, compare=False, default_factory=dict)

    def error(self, message: str, key_path: KeyPath) -> InputError:
        """An ``InputError`` at a key of the strategy file."""
        return SpecValidator(self.source, self.lines, self.source.parent).error(message, key_path)


def builtin_strategy_path(name: str) -> Path:
    """The YAML file of a built-in strategy (``cot``, ``clarify``, ``eval``, ``similar``)."""
    return Path(str(resources.files(__package__).joinpath(f"{name}.yaml")))


def load_strategy(strategy: str | Path) -> Strategy:
    """Load and check a strategy: a built-in name or the path of a YAML file.

    Args:
        strategy: ``cot``, ``clarify``, ``eval``, ``similar``, or a ``.yaml`` file.

    Returns:
        The strategy, its templates compiled and their variables checked.

    Raises:
        InputError: An unknown name, a missing file, or a file that is not a valid strategy
            (unknown key, bad template, unknown variable, bad regex); it names the file, line
            and key.
    """
    text = str(strategy)
    if text in BUILTIN_STRATEGIES:
        path = builtin_strategy_path(text)
    elif isinstance(strategy, Path) or text.endswith((".yaml", ".yml")) or Path(text).exists():
        path = absolute_path(Path(text))
    else:
        known = ", ".join(BUILTIN_STRATEGIES)
        raise InputError(
            f"unknown strategy {text!r}: a built-in ({known}) or a .yaml file", key="strategy"
        )
    data, lines = load_yaml(path)
    return _StrategyReader(path, lines).read(data, sha256_hex(path))


class _StrategyReader(SpecValidator):
    """Validates a strategy document and compiles its templates."""

    def __init__(self, path: Path, lines: dict[KeyPath, int]) -> None:
        super().__init__(path, lines, path.parent)
        # Otherwise Jinja's defaults: no autoescaping (the output is plain text), no final newline.
        self.env = SandboxedEnvironment(
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
        )
        self.env.filters["regex_escape"] = re.escape
        self.env.globals["error"] = _raise_error
        self.compiled: dict[KeyPath, Any] = {}

    def read(self, data: Any, sha256: str) -> Strategy:
        root = self.mapping(data, (), "a mapping with name and outputs")
        self.check_keys(root, ("name", "outputs"), ("description", "variables", "generation"), ())
        name = self.string(root["name"], ("name",))
        if not _NAME.match(name):
            raise self.error("use letters, digits, '_', '-' and '.' only", ("name",))
        description = root.get("description") or ""
        if not isinstance(description, str):
            raise self.error(
                f"expected a string, got {describe_value(description)}", ("description",)
            )
        known = set(REFERENCE_VARIABLES)
        variables = self.read_variables(root.get("variables"), known)
        generation = self.read_generation(root.get("generation"), set(known))
        if generation is not None:
            known |= {GENERATION_VARIABLE, *generation.groups}
        outputs = self.read_outputs(root["outputs"], known)
        return Strategy(
            name=name,
            description=description.strip(),
            variables=variables,
            generation=generation,
            outputs=outputs,
            source=self.source,
            sha256=sha256,
            lines=dict(self.lines),
            compiled=self.compiled,
        )

    def read_variables(self, value: Any, known: set[str]) -> tuple[tuple[str, str], ...]:
        if value is None:
            return ()
        mapping = self.mapping(value, ("variables",), "a mapping of names to Jinja expressions")
        variables = []
        for name, expression in mapping.items():
            key_path = ("variables", name)
            if not isinstance(name, str) or not _IDENTIFIER.match(name):
                raise self.error("a variable name must be a Python identifier", key_path)
            if name in known or name == GENERATION_VARIABLE:
                raise self.error(f"{name!r} is already a variable", key_path)
            expression = self.string(expression, key_path)
            try:
                self.check_names(self.env.parse(f"{{{{ ({expression}) }}}}"), known, key_path)
                self.compiled[key_path] = self.env.compile_expression(
                    expression, undefined_to_none=False
                )
            except jinja2.TemplateSyntaxError as error:
                raise self.error(f"invalid Jinja expression: {error.message}", key_path) from None
            known.add(name)
            variables.append((name, expression))
        return tuple(variables)

    def read_generation(self, value: Any, known: set[str]) -> GenerationStep | None:
        if value is None:
            return None
        section = ("generation",)
        mapping = self.mapping(value, section, "a mapping with prompt (and system, parse)")
        self.check_keys(mapping, ("prompt",), ("system", "examples", "parse", "expected"), section)
        prompt = self.template(mapping["prompt"], (*section, "prompt"), known)
        system = None
        if mapping.get("system") is not None:
            system = self.template(mapping["system"], (*section, "system"), known)
        parse = None
        if mapping.get("parse") is not None:
            parse = self.template(mapping["parse"], (*section, "parse"), known)
        expected = None
        if mapping.get("expected") is not None:
            expected = self.string(mapping["expected"], (*section, "expected")).strip()
        groups = tuple(dict.fromkeys(_GROUP.findall(parse or "")))
        for group in groups:
            if group in known or group == GENERATION_VARIABLE:
                raise self.error(f"group {group!r} shadows a variable", (*section, "parse"))
        examples = self.read_examples(mapping.get("examples"), (*section, "examples"))
        return GenerationStep(prompt, system, parse, expected, groups, examples)

    def read_examples(self, value: Any, key_path: KeyPath) -> tuple[Demonstration, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(f"expected a list, got {describe_value(value)}", key_path)
        examples = []
        for index, item in enumerate(value):
            item_path = (*key_path, index)
            what = "a mapping with query, response, answer (and other record fields)"
            record = dict(self.mapping(item, item_path, what))
            for key in ("query", "response", "answer"):
                if key not in record:
                    raise self.error(f"missing required key {key!r}", (*item_path, key))
                self.string(record[key], (*item_path, key))
            answer = record.pop("answer")
            examples.append(Demonstration(record, answer.strip(), self.lines.get(item_path)))
        return tuple(examples)

    def read_outputs(self, value: Any, known: set[str]) -> tuple[OutputSpec, ...]:
        if not isinstance(value, list) or not value:
            raise self.error(
                f"expected a non-empty list of {{kind, query, response}}, got "
                f"{describe_value(value)}",
                ("outputs",),
            )
        outputs: list[OutputSpec] = []
        for index, item in enumerate(value):
            key_path = ("outputs", index)
            mapping = self.mapping(item, key_path, "a mapping with kind, query and response")
            self.check_keys(mapping, ("kind", "query", "response"), (), key_path)
            kind = self.string(mapping["kind"], (*key_path, "kind"))
            if not _NAME.match(kind) or kind in _RESERVED_KINDS:
                raise self.error(
                    "use letters, digits, '_', '-' and '.' only, and not "
                    + " or ".join(repr(k) for k in _RESERVED_KINDS),
                    (*key_path, "kind"),
                )
            if kind in (o.kind for o in outputs):
                raise self.error(f"kind {kind!r} is used twice", (*key_path, "kind"))
            query = self.template(mapping["query"], (*key_path, "query"), known)
            response = self.template(mapping["response"], (*key_path, "response"), known)
            outputs.append(OutputSpec(kind=kind, query=query, response=response))
        return tuple(outputs)

    def template(self, value: Any, key_path: KeyPath, known: set[str]) -> str:
        """Check a template's syntax and variables, compile it, and return its source."""
        source = self.string(value, key_path)
        try:
            self.check_names(self.env.parse(source), known, key_path)
            self.compiled[key_path] = self.env.from_string(source)
        except jinja2.TemplateSyntaxError as error:
            raise self.error(
                f"invalid Jinja template: {error.message} (template line {error.lineno})", key_path
            ) from None
        return source

    def check_names(self, tree: Any, known: set[str], key_path: KeyPath) -> None:
        names = meta.find_undeclared_variables(tree) - known - set(self.env.globals)
        if names:
            available = ", ".join(sorted(known))
            raise self.error(
                f"unknown variable {sorted(names)[0]!r} (available here: {available})", key_path
            )
