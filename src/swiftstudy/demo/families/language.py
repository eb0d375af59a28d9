"""Families about words and meaning: number to words, word formation from initials, error
correction, semantic similarity, classification with a given label set, reversing a word and the
odd one out."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from swiftstudy.demo.families.base import Family, Problem, join_words, normalize

# fmt: off
UNITS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)
# fmt: on
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")

# -- number to words --------------------------------------------------------------------------


def number_to_words(n: int) -> str:
    """``347`` → ``three hundred forty-seven`` (1 to 999, no "and")."""
    hundreds, rest = divmod(n, 100)
    parts = [f"{UNITS[hundreds]} hundred"] if hundreds else []
    if rest >= 20:
        parts.append(TENS[rest // 10] + (f"-{UNITS[rest % 10]}" if rest % 10 else ""))
    elif rest or not parts:
        parts.append(UNITS[rest])
    return " ".join(parts)


def make_number_words(rng: random.Random) -> Problem:
    """Write a number from 101 to 999 in English words."""
    n = rng.randint(101, 999)
    wrong = n + 10 if n % 100 < 90 else n - 10
    hundreds, rest = divmod(n, 100)
    last = f"give '{number_to_words(rest)}'" if rest else "add nothing"
    return Problem(
        query=f"Write the number {n} in English words.",
        answer=number_to_words(n),
        reasons=(
            f"The hundreds digit {hundreds} gives '{UNITS[hundreds]} hundred'.",
            f"The last two digits {rest:02d} {last}.",
        ),
        requirements=(
            f"Write exactly the value {n} in English words.",
            "Use lowercase words with a hyphen between tens and units, as in forty-seven.",
        ),
        bad_answer=number_to_words(wrong),
        flaw=f"The [output] writes {wrong}, not {n}",
        facts={"number": n},
    )


def words_to_number(text: str) -> int | None:
    """Read lowercase English number words back (the checker's own route)."""
    total = 0
    for token in text.replace("-", " ").split():
        if token in UNITS:
            total += UNITS.index(token)
        elif token in TENS[2:]:
            total += 10 * TENS.index(token)
        elif token == "hundred" and 0 < total < 10:
            total *= 100
        else:
            return None
    return total


def check_number_words(facts: Mapping[str, Any], response: str) -> bool:
    """Parse the words back into a number; lowercase and hyphenated tens as asked."""
    text = response.strip().rstrip(".")
    hyphenated = all(t not in TENS[2:] for t in text.split()) or facts["number"] % 10 == 0
    return text == text.lower() and hyphenated and words_to_number(text) == facts["number"]


# -- word formation from initials -------------------------------------------------------------

TARGETS = ("cat", "map", "sun", "pen", "star", "lamp", "frog", "tree", "bird", "milk", "rain")
WORDS_BY_LETTER = {
    "a": ("Apple", "Anchor", "Arrow"),
    "b": ("Bread", "Button", "Basket"),
    "c": ("Candle", "Cloud", "Copper"),
    "d": ("Desert", "Dolphin", "Drum"),
    "e": ("Eagle", "Ember", "Engine"),
    "f": ("Forest", "Feather", "Flute"),
    "g": ("Garden", "Giant", "Glove"),
    "i": ("Island", "Ink", "Iron"),
    "k": ("Kettle", "Kite", "Key"),
    "l": ("Lemon", "Ladder", "Lantern"),
    "m": ("Mirror", "Meadow", "Marble"),
    "n": ("Needle", "North", "Nest"),
    "o": ("Ocean", "Orbit", "Olive"),
    "p": ("Piano", "Pebble", "Pillow"),
    "r": ("River", "Rocket", "Ribbon"),
    "s": ("Silver", "Saddle", "Spoon"),
    "t": ("Tiger", "Tulip", "Tower"),
    "u": ("Umbrella", "Uncle", "Unicorn"),
}


def make_initials(rng: random.Random) -> Problem:
    """Form a word from the first letters of given words."""
    target = rng.choice(TARGETS)
    words = [rng.choice(WORDS_BY_LETTER[c]) for c in target]
    wrong = target[::-1]
    letters = ", ".join(w[0] for w in words)
    return Problem(
        query=f"Form a word from the first letters of these words, in order: {', '.join(words)}.",
        answer=target,
        reasons=(f"The first letters are {letters}.", f"Together they spell '{target}'."),
        requirements=(
            "Take the first letter of each word, in the order given.",
            "Write the letters together as one lowercase word.",
        ),
        bad_answer=wrong,
        flaw=f"The [output] gives '{wrong}', the letters in reverse order, not '{target}'",
        facts={"words": words},
    )


def check_initials(facts: Mapping[str, Any], response: str) -> bool:
    """Join the first letters."""
    return response.strip().rstrip(".") == "".join(w[0] for w in facts["words"]).lower()


# -- error correction -------------------------------------------------------------------------

MISSPELLINGS = {
    "library": "libary",
    "necessary": "neccessary",
    "separate": "seperate",
    "receive": "recieve",
    "tomorrow": "tommorow",
    "calendar": "calender",
    "business": "buisness",
    "beginning": "begining",
    "government": "goverment",
    "restaurant": "restaraunt",
    "weird": "wierd",
    "definitely": "definately",
}
SENTENCES = (
    "The {library} opens at nine on weekdays.",
    "It is {necessary} to water the plants every day.",
    "Please keep the two piles {separate} until noon.",
    "You will {receive} the parcel next week.",
    "We are leaving for the coast {tomorrow} morning.",
    "She wrote the meeting in her {calendar} at once.",
    "His small {business} sells handmade chairs.",
    "The {beginning} of the film was very slow.",
    "The {government} announced a new holiday.",
    "The {restaurant} on the corner serves fresh fish.",
    "That was a {weird} noise from the attic.",
    "I will {definitely} call you after lunch.",
)


def make_error_correction(rng: random.Random) -> Problem:
    """Fix the one misspelled word of a sentence."""
    template = rng.choice(SENTENCES)
    right = template[template.index("{") + 1 : template.index("}")]
    wrong = MISSPELLINGS[right]
    sentence = template.replace(f"{{{right}}}", wrong)
    fixed = template.replace(f"{{{right}}}", right)
    return Problem(
        query=f'Correct the spelling mistake in this sentence: "{sentence}"',
        answer=fixed,
        reasons=(
            f"The word '{wrong}' is misspelled; the correct spelling is '{right}'.",
            "Every other word is spelled correctly.",
        ),
        requirements=(
            "Find the misspelled word and replace it with its correct spelling.",
            "Keep the rest of the sentence unchanged and give the whole corrected sentence.",
        ),
        bad_answer=sentence,
        flaw=f"The [output] still spells '{wrong}' instead of '{right}'",
        facts={"sentence": sentence, "misspelled": wrong},
    )


def check_error_correction(facts: Mapping[str, Any], response: str) -> bool:
    """The sentence with the misspelling, and only it, replaced by its known correction."""
    fixes = {wrong: right for right, wrong in MISSPELLINGS.items()}
    expected = facts["sentence"].replace(facts["misspelled"], fixes[facts["misspelled"]])
    return response.strip() == expected


# -- semantic similarity ----------------------------------------------------------------------

AGENTS = ("the cat", "the dog", "the teacher", "the pilot", "the farmer", "the nurse")
VERBS = (("chased", "chased"), ("called", "called"), ("helped", "helped"), ("saw", "seen"))


def _sentence(agent: str, verb: tuple[str, str], patient: str, passive: bool) -> str:
    text = f"{patient} was {verb[1]} by {agent}" if passive else f"{agent} {verb[0]} {patient}"
    return text[0].upper() + text[1:] + "."


def make_similarity(rng: random.Random) -> Problem:
    """Do two sentences (active or passive, roles kept or swapped) mean the same thing?"""
    agent, patient = rng.sample(AGENTS, 2)
    verb = rng.choice(VERBS)
    same, passive = rng.random() < 0.5, rng.random() < 0.5
    agent2, patient2 = (agent, patient) if same else (patient, agent)
    first = _sentence(agent, verb, patient, False)
    second = _sentence(agent2, verb, patient2, passive)
    answer = "yes" if same else "no"
    return Problem(
        query="Do these two sentences mean the same thing? Answer yes or no.\n"
        f"Sentence 1: {first}\nSentence 2: {second}",
        answer=answer,
        reasons=(
            f"Sentence 1 says that {agent} {verb[0]} {patient}.",
            f"Sentence 2 says that {agent2} {verb[0]} {patient2}.",
            "The roles are the same, so they mean the same thing."
            if same
            else "The roles are swapped, so they do not mean the same thing.",
        ),
        requirements=(
            "Compare who does what to whom in the two sentences.",
            "Answer yes or no.",
        ),
        bad_answer="no" if same else "yes",
        flaw=f"The [output] says {'no' if same else 'yes'}, but the roles are "
        f"{'the same' if same else 'swapped'}",
        facts={"sentences": [first, second]},
    )


def _roles(sentence: str) -> tuple[str, str, str]:
    """(agent, verb, patient) of an active or passive demo sentence."""
    text = sentence.rstrip(".").lower()
    if " was " in text and " by " in text:
        patient, rest = text.split(" was ", 1)
        participle, agent = rest.split(" by ", 1)
        verb = next(v[0] for v in VERBS if v[1] == participle)
        return agent, verb, patient
    for past, _ in VERBS:
        if f" {past} " in text:
            agent, patient = text.split(f" {past} ", 1)
            return agent, past, patient
    raise ValueError(f"not a demo sentence: {sentence!r}")


def check_similarity(facts: Mapping[str, Any], response: str) -> bool:
    """Parse both sentences into roles and compare them."""
    first, second = (_roles(s) for s in facts["sentences"])
    return normalize(response) == ("yes" if first == second else "no")


# -- classification with a given label set ----------------------------------------------------

TOPICS = {
    "sports": ("striker", "referee", "marathon", "goalkeeper"),
    "food": ("soup", "pastry", "chef", "recipe"),
    "weather": ("thunderstorm", "forecast", "snowfall", "drizzle"),
    "music": ("guitarist", "orchestra", "melody", "drummer"),
}
TOPIC_TEMPLATES = (
    "Everyone was talking about the {} this morning.",
    "The {} was the highlight of the whole weekend.",
    "Nobody expected the {} to make the evening news.",
)


def make_classify(rng: random.Random) -> Problem:
    """Pick the topic of a sentence from a given label set."""
    label = rng.choice(sorted(TOPICS))
    labels = [label, *rng.sample([t for t in sorted(TOPICS) if t != label], 2)]
    rng.shuffle(labels)
    keyword = rng.choice(TOPICS[label])
    sentence = rng.choice(TOPIC_TEMPLATES).format(keyword)
    wrong = next(t for t in labels if t != label)
    return Problem(
        query=f"Classify the topic of the sentence. Labels: {', '.join(labels)}.\n"
        f"Sentence: {sentence}",
        answer=label,
        reasons=(
            f"The sentence mentions '{keyword}', a word about {label}.",
            f"Of the labels {join_words(labels)}, the topic is {label}.",
        ),
        requirements=(
            "Choose the label that matches the topic of the sentence.",
            f"Answer with exactly one of the labels: {', '.join(labels)}.",
        ),
        bad_answer=wrong,
        flaw=f"The [output] says {wrong}, but the sentence is about {label}",
        facts={"sentence": sentence, "labels": labels},
    )


def check_classify(facts: Mapping[str, Any], response: str) -> bool:
    """The offered label whose keywords the sentence contains."""
    words = set(facts["sentence"].lower().rstrip(".").split())
    (topic,) = (t for t in facts["labels"] if words & set(TOPICS[t]))
    return normalize(response) == topic


# -- reversing a word (base run) --------------------------------------------------------------

REVERSE_WORDS = (
    "planet",
    "garden",
    "window",
    "silver",
    "rocket",
    "pencil",
    "market",
    "bottle",
    "candle",
    "forest",
    "winter",
    "basket",
    "ladder",
    "button",
    "orange",
    "dragon",
    "castle",
    "mirror",
)


def make_reverse_word(rng: random.Random) -> Problem:
    """Write a word backwards."""
    word = rng.choice(REVERSE_WORDS)
    return Problem(
        query=f"Write the word '{word}' backwards.",
        answer=word[::-1],
        reasons=(f"Read from the last letter to the first, '{word}' is {', '.join(word[::-1])}.",),
        requirements=(f"Reverse the order of the letters of '{word}'.", "Give one lowercase word."),
        bad_answer=word,
        flaw=f"The [output] repeats '{word}' unchanged",
        facts={"word": word},
    )


def check_reverse_word(facts: Mapping[str, Any], response: str) -> bool:
    """Each letter of the response is the mirror letter of the word."""
    text = response.strip().rstrip(".")
    word = facts["word"]
    return len(text) == len(word) and all(c == word[-1 - i] for i, c in enumerate(text))


# -- the odd one out (base run) ---------------------------------------------------------------

CATEGORIES = {
    "fruit": ("apple", "pear", "plum", "mango", "cherry"),
    "animal": ("tiger", "horse", "otter", "zebra", "camel"),
    "colour": ("red", "green", "violet", "amber", "teal"),
    "tool": ("hammer", "saw", "wrench", "chisel", "drill"),
}


def make_odd_one_out(rng: random.Random) -> Problem:
    """Which word is not of the same kind as the others?"""
    group, other = rng.sample(sorted(CATEGORIES), 2)
    words = [*rng.sample(CATEGORIES[group], 3), rng.choice(CATEGORIES[other])]
    odd = words[-1]
    rng.shuffle(words)
    wrong = next(w for w in words if w != odd)
    return Problem(
        query=f"Which word does not belong with the others: {', '.join(words)}?",
        answer=odd,
        reasons=(f"Every word but '{odd}' names a {group}; '{odd}' names a {other}.",),
        requirements=("Find the word of a different kind from the others.", "Give that word."),
        bad_answer=wrong,
        flaw=f"The [output] says {wrong}, which is a {group} like most of the others",
        facts={"words": words},
    )


def check_odd_one_out(facts: Mapping[str, Any], response: str) -> bool:
    """The only word whose category no other word shares."""
    kind = {w: c for c, ws in CATEGORIES.items() for w in ws}
    kinds = [kind[w] for w in facts["words"]]
    odd = [w for w, k in zip(facts["words"], kinds, strict=True) if kinds.count(k) == 1]
    return normalize(response) in odd


NUMBER_WORDS = Family("number_words", make_number_words, check_number_words)
INITIALS = Family("initials", make_initials, check_initials)
ERROR_CORRECTION = Family("error_correction", make_error_correction, check_error_correction)
SIMILARITY = Family("similarity", make_similarity, check_similarity)
CLASSIFY = Family("classify", make_classify, check_classify)
REVERSE_WORD = Family("reverse_word", make_reverse_word, check_reverse_word)
ODD_ONE_OUT = Family("odd_one_out", make_odd_one_out, check_odd_one_out)
