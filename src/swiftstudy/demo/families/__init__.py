"""The demo's task families: rule-made instruction tasks whose answers a program checks.

Twelve study families (the task types the paper lists, and a few more) give the probe and
evaluation sets; four other families give the base run's data, so probes never appear in it.
"""

from __future__ import annotations

from swiftstudy.demo.families import language, reasoning, text
from swiftstudy.demo.families.base import Family, Problem

#: The families of the probe and evaluation sets: one task each.
STUDY_FAMILIES: tuple[Family, ...] = (
    reasoning.EXCHANGE,
    language.CLASSIFY,
    language.NUMBER_WORDS,
    language.SIMILARITY,
    language.ERROR_CORRECTION,
    language.INITIALS,
    text.CONTROLLED_EDIT,
    text.PARAGRAPH_SPLIT,
    text.EXTRACT_LIST,
    text.SORT,
    reasoning.COUNT_LETTER,
    reasoning.WEEKDAY,
)
#: The families of the base run's training data, disjoint from the study families.
BASE_FAMILIES: tuple[Family, ...] = (
    reasoning.ARITHMETIC,
    reasoning.LARGEST,
    language.REVERSE_WORD,
    language.ODD_ONE_OUT,
)
FAMILIES: dict[str, Family] = {f.name: f for f in (*STUDY_FAMILIES, *BASE_FAMILIES)}

__all__ = ["BASE_FAMILIES", "FAMILIES", "STUDY_FAMILIES", "Family", "Problem"]
