"""Families that transform text: controlled editing with labels, paragraph splitting with numbering
and end markers, information extraction into a list, and sorting words."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Mapping
from typing import Any

from swiftstudy.demo.families.base import Family, Problem, join_words

# -- controlled text editing with labels ------------------------------------------------------

SUBJECTS = ("The children", "My neighbour", "The old sailor", "Our teacher", "The twins")
EDIT_VERBS = ("painted", "cleaned", "repaired", "measured", "photographed")
ADJECTIVES = ("quiet", "narrow", "wooden", "yellow", "ancient", "tiny")
NOUNS = ("fence", "bridge", "boat", "gate", "tower", "bench")
PLACES = ("near the lake", "after lunch", "in the rain", "on Sunday", "by the harbour")
LABELS = ("REPLACE", "DELETE", "INSERT")


def _apply_edit(words: list[str], label: str, target: str, new: str | None) -> list[str]:
    """The checker's route: edit the word list at the target word."""
    index = words.index(target)
    if label == "REPLACE":
        return [*words[:index], new, *words[index + 1 :]]
    if label == "DELETE":
        return [*words[:index], *words[index + 1 :]]
    return [*words[: index + 1], new, *words[index + 1 :]]


def make_controlled_edit(rng: random.Random) -> Problem:
    """Apply one labelled edit (replace, delete or insert a word) to a sentence."""
    adjective, replacement = rng.sample(ADJECTIVES, 2)
    subject, verb, noun, place = (rng.choice(x) for x in (SUBJECTS, EDIT_VERBS, NOUNS, PLACES))
    sentence = f"{subject} {verb} the {adjective} {noun} {place}."
    label = rng.choice(LABELS)
    if label == "REPLACE":
        edit, target, new = f'REPLACE "{adjective}" WITH "{replacement}"', adjective, replacement
        says = f'the label REPLACE swaps "{adjective}" for "{replacement}"'
        edited = sentence.replace(f" {adjective} ", f" {replacement} ")
    elif label == "DELETE":
        edit, target, new = f'DELETE "{adjective}"', adjective, None
        says = f'the label DELETE removes the word "{adjective}"'
        edited = sentence.replace(f" {adjective} ", " ")
    else:
        edit, target, new = f'INSERT "carefully" AFTER "{noun}"', noun, "carefully"
        says = f'the label INSERT puts "carefully" right after "{noun}"'
        edited = sentence.replace(f" {noun} ", f" {noun} carefully ")
    return Problem(
        query=f"Edit the sentence as the label says.\nSentence: {sentence}\nEdit: {edit}",
        answer=edited,
        reasons=(f"In the sentence, {says}.", "No other word changes."),
        requirements=(
            f"Apply the edit {edit} to the sentence.",
            "Change nothing else and give the whole edited sentence.",
        ),
        bad_answer=sentence,
        flaw="The [output] repeats the sentence without applying the edit",
        facts={"sentence": sentence, "label": label, "target": target, "new": new},
    )


def check_controlled_edit(facts: Mapping[str, Any], response: str) -> bool:
    """Edit the sentence's word list and compare word for word."""
    words = facts["sentence"].rstrip(".").split()
    expected = _apply_edit(words, facts["label"], facts["target"], facts["new"])
    return response.strip().endswith(".") and response.strip().rstrip(".").split() == expected


# -- paragraph splitting with numbering and end markers ---------------------------------------

END_MARKER = "[END]"
PARAGRAPH_SENTENCES = (
    "The market opens at dawn",
    "Farmers bring apples and pears from the hills",
    "By noon most stalls are empty",
    "A band plays near the fountain",
    "Children feed the pigeons with bread",
    "The baker sells the last loaves at a discount",
    "In the evening the square is quiet again",
    "A cat sleeps on the warm steps",
)
_NUMBERED = re.compile(r"(\d+)\. (.+) " + re.escape(END_MARKER))


def make_paragraph_split(rng: random.Random) -> Problem:
    """Split a paragraph into numbered sentences, each ending with an end marker."""
    sentences = [s + "." for s in rng.sample(PARAGRAPH_SENTENCES, rng.randint(3, 4))]
    paragraph = " ".join(sentences)
    answer = "\n".join(f"{i}. {s} {END_MARKER}" for i, s in enumerate(sentences, 1))
    return Problem(
        query="Split the paragraph into sentences. Put each sentence on its own line, numbered "
        f"from 1, and end each line with {END_MARKER}.\nParagraph: {paragraph}",
        answer=answer,
        reasons=(
            f"The paragraph has {len(sentences)} sentences, each ending with a period.",
            f"Numbering them from 1 and closing each with {END_MARKER} gives {len(sentences)} "
            "lines.",
        ),
        requirements=(
            f"End every line with the marker {END_MARKER}.",
            "Put each sentence on its own line, numbered from 1, with its words unchanged.",
        ),
        bad_answer="\n".join(f"{i}. {s}" for i, s in enumerate(sentences, 1)),
        flaw=f"The [output] numbers the sentences but leaves out every {END_MARKER} marker",
        facts={"paragraph": paragraph},
    )


def check_paragraph_split(facts: Mapping[str, Any], response: str) -> bool:
    """Lines numbered 1..n, one sentence and an end marker each, rejoining into the paragraph."""
    lines = response.strip().split("\n")
    matches = [_NUMBERED.fullmatch(line.strip()) for line in lines]
    if not all(matches):
        return False
    numbers = [int(m.group(1)) for m in matches]
    sentences = [m.group(2) for m in matches]
    one_each = all(s.endswith(".") and s.count(".") == 1 for s in sentences)
    in_order = numbers == list(range(1, len(lines) + 1))
    return one_each and in_order and " ".join(sentences) == facts["paragraph"]


# -- information extraction into a list -------------------------------------------------------

CITIES = ("Lisbon", "Oslo", "Vienna", "Dublin", "Prague", "Madrid", "Athens", "Warsaw", "Bern")
PEOPLE = ("Mia", "Tom", "Lena", "Omar", "Rosa", "Karl")
TRAVELS = (
    "{p} flew from {0} to {1}, then took a train to {2}.",
    "{p} lived in {0} before moving to {1} with a friend called {q}.",
    "The tour led by {p} visits {0}, {1}, {2} and {3} in June.",
    "After a week in {0}, {p} met {q} in {1}.",
)


def make_extract_list(rng: random.Random) -> Problem:
    """List the cities a text names, in order."""
    template = rng.choice(TRAVELS)
    n = len(re.findall(r"\{\d\}", template))
    cities = rng.sample(CITIES, n)
    p, q = rng.sample(PEOPLE, 2)
    text = template.format(*cities, p=p, q=q)
    return Problem(
        query="List the cities mentioned in the text, in the order they appear, separated by "
        f"commas.\nText: {text}",
        answer=", ".join(cities),
        reasons=(
            f"The text names {len(cities)} cities: {join_words(cities)}.",
            f"The names {p} and {q} are people, not cities."
            if "{q}" in template
            else f"The name {p} is a person, not a city.",
        ),
        requirements=(
            "Include every city named in the text, and nothing else.",
            "Keep the order in which they appear and separate them with commas.",
        ),
        bad_answer=", ".join(cities[:-1]),
        flaw=f"The [output] leaves out {cities[-1]}",
        facts={"text": text},
    )


def check_extract_list(facts: Mapping[str, Any], response: str) -> bool:
    """Scan the text's words for known city names."""
    found = [w for w in re.findall(r"[A-Z][a-z]+", facts["text"]) if w in CITIES]
    return [c.strip() for c in response.strip().rstrip(".").split(",")] == found


# -- sorting words ----------------------------------------------------------------------------

SORT_WORDS = (
    "pear",
    "cloud",
    "music",
    "river",
    "apple",
    "stone",
    "honey",
    "glass",
    "tiger",
    "lemon",
    "ocean",
    "chair",
    "bread",
    "kite",
)


def make_sort_words(rng: random.Random) -> Problem:
    """Sort a few words alphabetically."""
    words = rng.sample(SORT_WORDS, 5)
    ordered = sorted(words)
    return Problem(
        query=f"Sort these words alphabetically: {', '.join(words)}.",
        answer=", ".join(ordered),
        reasons=(
            f"Their first letters are {', '.join(w[0] for w in words)}.",
            f"In alphabetical order the words are {join_words(ordered)}.",
        ),
        requirements=(
            "Put the words in alphabetical order.",
            "List every given word exactly once, separated by commas.",
        ),
        bad_answer=", ".join(reversed(ordered)),
        flaw="The [output] lists the words in reverse alphabetical order",
        facts={"words": words},
    )


def check_sort_words(facts: Mapping[str, Any], response: str) -> bool:
    """A permutation of the words in which each word is at most the next."""
    listed = [w.strip() for w in response.strip().rstrip(".").split(",")]
    in_order = all(a <= b for a, b in itertools.pairwise(listed))
    return in_order and sorted(listed) == sorted(facts["words"])


CONTROLLED_EDIT = Family("controlled_edit", make_controlled_edit, check_controlled_edit)
PARAGRAPH_SPLIT = Family("paragraph_split", make_paragraph_split, check_paragraph_split)
EXTRACT_LIST = Family("extract_list", make_extract_list, check_extract_list)
SORT = Family("sort_words", make_sort_words, check_sort_words)
