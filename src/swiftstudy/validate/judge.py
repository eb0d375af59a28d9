"""The judge evaluator: an OpenAI-compatible model grades each answer 1 (correct) or 0.

As in the paper (which used GPT-4o), the judge sees the query, the golden response and, when the
eval record has them, the checkpoints a correct answer must satisfy, and replies with one digit.
Requests go through :mod:`swiftstudy.generate` (retries with backoff, concurrency) behind its
on-disk cache, so a rerun asks the judge again only about answers it has not graded; the cache key
is the judge's settings and the exact messages, which hold the answer.

A reply without a lone 0 or 1 counts as 0 and is logged; its text is kept in ``extracted``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from swiftstudy.data import Message
from swiftstudy.generate import (
    CachedGenerator,
    GenerationCache,
    Generator,
    OpenAIChatGenerator,
    OpenAISettings,
)
from swiftstudy.validate.evaluator_spec import JudgeSpec
from swiftstudy.validate.grading import EvalQuery, Evaluator, Grade

logger = logging.getLogger(__name__)

JUDGE_SYSTEM_PROMPT = (
    "You grade answers to questions. Compare the answer with the reference answer and reply with "
    "a single digit: 1 if the answer is correct, 0 if it is not."
)
JUDGE_PROMPT = """Question:
{query}

Reference answer:
{golden}
{checkpoints}
Answer to grade:
{answer}

Is the answer to grade correct, in agreement with the reference answer{and_checkpoints}? \
Reply with 1 (correct) or 0 (incorrect) only."""
_VERDICT = re.compile(r"(?<![\w.])([01])(?!\w|\.\d)")


def render_judge_prompt(query: EvalQuery, answer: str) -> list[Message]:
    """The messages the judge receives for one answer."""
    checkpoints = ""
    if query.checkpoints:
        items = "\n".join(f"- {point}" for point in query.checkpoints)
        checkpoints = f"\nCheckpoints a correct answer must satisfy:\n{items}\n"
    text = JUDGE_PROMPT.format(
        query=query.query_text,
        golden=query.golden,
        checkpoints=checkpoints,
        answer=answer,
        and_checkpoints=" and satisfying every checkpoint" if query.checkpoints else "",
    )
    return [Message("system", JUDGE_SYSTEM_PROMPT), Message("user", text)]


def parse_verdict(reply: str) -> bool | None:
    """``True`` for a reply whose first lone digit is 1, ``False`` for 0, ``None`` for neither."""
    found = _VERDICT.search(reply)
    return None if found is None else found.group(1) == "1"


class JudgeEvaluator(Evaluator):
    """Grades answers with a judge model.

    Args:
        generator: Answers the judge prompts; usually :func:`build_judge_generator`'s.
    """

    def __init__(self, generator: Generator) -> None:
        self.generator = generator

    def grade_all(self, queries: Sequence[EvalQuery], answers: Sequence[str]) -> list[Grade]:
        if len(queries) != len(answers):
            raise ValueError(f"{len(queries)} queries but {len(answers)} answers")
        prompts = [render_judge_prompt(q, a) for q, a in zip(queries, answers, strict=True)]
        replies = self.generator.generate(prompts)
        verdicts = [parse_verdict(reply) for reply in replies]
        if unreadable := verdicts.count(None):
            logger.warning(
                "the judge gave %d of %d replies without a lone 0 or 1: graded 0",
                unreadable,
                len(replies),
            )
        return [Grade(bool(v), reply.strip()) for v, reply in zip(verdicts, replies, strict=True)]


def build_judge_generator(spec: JudgeSpec) -> CachedGenerator:
    """The judge's chat generator, greedy, behind the on-disk generation cache."""
    settings = OpenAISettings(
        model=spec.model,
        base_url=spec.base_url,
        api_key_env=spec.api_key_env,
        temperature=0.0,
        max_new_tokens=spec.max_new_tokens,
        concurrency=spec.concurrency,
        max_retries=spec.max_retries,
        timeout_s=spec.timeout_s,
    )
    return CachedGenerator(OpenAIChatGenerator(settings), GenerationCache(spec.cache_dir))
