"""The demo's task families: rule-made instruction tasks whose answers a program checks.

Twelve study families (the task types the paper lists, and a few more) give the probe and
evaluation sets; four other families give the base run's data, so probes never appear in it.
"""

from __future__ import annotations

from swiftstudy.demo.families.base import Family, Problem
from swiftstudy.demo.families.language import (
    CLASSIFY,
    ERROR_CORRECTION,
    INITIALS,
    NUMBER_WORDS,
    ODD_ONE_OUT,
    REVERSE_WORD,
    SIMILARITY,
)
from swiftstudy.demo.families.reasoning import (
    ARITHMETIC,
    COUNT_LETTER,
    EXCHANGE,
    LARGEST,
    WEEKDAY,
)
from swiftstudy.demo.families.text import CONTROLLED_EDIT, EXTRACT_LIST, PARAGRAPH_SPLIT, SORT

#: The families of the probe and evaluation sets: one task each.
STUDY_FAMILIES: tuple[Family, ...] = (
    EXCHANGE,
    CLASSIFY,
    NUMBER_WORDS,
    SIMILARITY,
    ERROR_CORRECTION,
    INITIALS,
    CONTROLLED_EDIT,
    PARAGRAPH_SPLIT,
    EXTRACT_LIST,
    SORT,
    COUNT_LETTER,
    WEEKDAY,
)
#: The families of the base run's training data, disjoint from the study families.
BASE_FAMILIES: tuple[Family, ...] = (ARITHMETIC, LARGEST, REVERSE_WORD, ODD_ONE_OUT)
FAMILIES: dict[str, Family] = {f.name: f for f in (*STUDY_FAMILIES, *BASE_FAMILIES)}

__all__ = ["BASE_FAMILIES", "FAMILIES", "STUDY_FAMILIES", "Family", "Problem"]
