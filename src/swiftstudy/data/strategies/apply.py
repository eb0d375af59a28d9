"""Apply a strategy to one reference: the generator prompt, then the probes from its answer.

For each reference the template context holds the reference variables (``id``, ``task``,
``query`` = the last prompt message, ``response``, ``messages`` = the prompt messages as dicts,
``label``, ``record`` = the whole record), then the strategy's ``variables``; after generation,
``generation`` (the answer, stripped) and the parse regex's named groups (stripped; ``""`` when a
group did not take part). Rendered text is stripped of surrounding whitespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jinja2

from swiftstudy.config.yamlio import KeyPath
from swiftstudy.data.examples import Example, Message
from swiftstudy.data.strategies.strategy import GENERATION_VARIABLE, Strategy, TemplateFailure
from swiftstudy.errors import InputError

#: Errors a template or expression can raise while rendering (besides ``error()`` calls).
_RENDER_ERRORS = (
    jinja2.TemplateError,
    TypeError,
    ValueError,
    ArithmeticError,
    LookupError,
    AttributeError,
)


@dataclass(frozen=True)
class Probe:
    """One probe example made from a reference.

    Attributes:
        kind: The strategy output it comes from (``cot``, ``clarified``, ``clarification``...).
        strategy: The strategy's name.
        source_id: The reference's id.
        example: The probe: the reference's id, task and earlier prompt messages, the rendered
            query as the last prompt message, and the rendered response.
    """

    kind: str
    strategy: str
    source_id: str
    example: Example


class ParseFailure(Exception):
    """The generator's answer does not have the shape the strategy expects."""


def build_context(strategy: Strategy, reference: Example) -> dict[str, Any]:
    """The template variables of one reference: its own, then the strategy's ``variables``.

    Raises:
        InputError: A variable's expression fails, or calls ``error()``, for this reference.
    """
    context: dict[str, Any] = {
        "id": reference.id,
        "task": reference.task,
        "query": reference.prompt[-1].content,
        "response": reference.response,
        "messages": [{"role": m.role, "content": m.content} for m in reference.prompt],
        "label": reference.record.get("label"),
        "record": reference.record,
    }
    for name, _ in strategy.variables:
        key_path = ("variables", name)
        context[name] = _evaluate(strategy, key_path, reference, lambda f: f(**context))
    return context


def render_generation_prompt(
    strategy: Strategy, reference: Example, context: dict[str, Any]
) -> tuple[Message, ...]:
    """The messages sent to the generator for one reference (the strategy must have a step).

    The system message, then a user/assistant pair per few-shot example, then the prompt.
    """
    step = strategy.generation
    if step is None:
        raise ValueError(f"strategy {strategy.name!r} has no generation step")
    messages = []
    if step.system is not None:
        key_path = ("generation", "system")
        messages.append(Message("system", _render(strategy, key_path, reference, context)))
    for index, demo in enumerate(step.examples):
        record = {"id": f"examples[{index}]", "task": f"examples[{index}]", **demo.record}
        origin = f"{strategy.source}:{demo.line}"
        prompt = (Message("user", record["query"]),)
        shown = Example(
            record["id"], record["task"], prompt, record["response"], origin, record=record
        )
        user = _render(strategy, ("generation", "prompt"), shown, build_context(strategy, shown))
        messages += [Message("user", user), Message("assistant", demo.answer)]
    user = _render(strategy, ("generation", "prompt"), reference, context)
    return (*messages, Message("user", user))


def render_probes(
    strategy: Strategy, reference: Example, context: dict[str, Any], generation: str | None
) -> list[Probe]:
    """The probes of one reference, one per output kind.

    Args:
        strategy: The strategy.
        reference: The reference example.
        context: Its :func:`build_context`.
        generation: The answer to the generation prompt (``None`` without a generation step).

    Raises:
        ParseFailure: The answer is blank, does not match ``generation.parse``, or an output
            renders blank.
        InputError: A template fails for this reference, or ``parse`` is not a valid regex.
    """
    context = dict(context)
    if strategy.generation is not None:
        if generation is None:
            raise ValueError(f"strategy {strategy.name!r} needs a generator answer")
        context.update(_parse_answer(strategy, context, generation))
    probes = []
    for index, output in enumerate(strategy.outputs):
        query = _render(strategy, ("outputs", index, "query"), reference, context)
        response = _render(strategy, ("outputs", index, "response"), reference, context)
        for field, text in (("query", query), ("response", response)):
            if not text:
                raise ParseFailure(f"outputs[{index}].{field} ({output.kind}) rendered empty")
        prompt = reference.prompt
        example = Example(
            id=reference.id,
            task=reference.task,
            prompt=(*prompt[:-1], Message(prompt[-1].role, query)),
            response=response,
            origin=reference.origin,
        )
        probes.append(Probe(output.kind, strategy.name, reference.id, example))
    return probes


def _parse_answer(strategy: Strategy, context: dict[str, Any], generation: str) -> dict[str, str]:
    """``generation`` and the parse regex's named groups, or a ParseFailure."""
    text = generation.strip()
    if not text:
        raise ParseFailure("empty answer")
    step = strategy.generation
    if step is None or step.parse is None:
        return {GENERATION_VARIABLE: text}
    key_path = ("generation", "parse")
    # The regex is a template too: it may embed reference values ({{ response | regex_escape }}).
    try:
        pattern = re.compile(strategy.compiled[key_path].render(context))
    except re.error as error:
        raise strategy.error(f"invalid regular expression: {error}", key_path) from None
    match = pattern.search(text)
    if match is None:
        expected = f"expected {step.expected}" if step.expected else "no match"
        raise ParseFailure(f"{expected} (generation.parse)")
    groups = {name: (value or "").strip() for name, value in match.groupdict().items()}
    return {GENERATION_VARIABLE: text, **groups}


def _render(
    strategy: Strategy, key_path: KeyPath, reference: Example, context: dict[str, Any]
) -> str:
    return _evaluate(strategy, key_path, reference, lambda t: t.render(context)).strip()


def _evaluate(strategy: Strategy, key_path: KeyPath, reference: Example, call: Any) -> Any:
    """Run a compiled template or expression, turning its failures into InputErrors."""
    try:
        return call(strategy.compiled[key_path])
    except TemplateFailure as failure:
        raise InputError(str(failure), path=reference.origin) from None
    except _RENDER_ERRORS as error:
        message = f"{type(error).__name__}: {error} (rendering {reference.origin})"
        raise strategy.error(message, key_path) from None
