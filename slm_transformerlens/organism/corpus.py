"""The organism's text: a template grammar of plain English sentences and a fact base.

Everything here was written for this project (no external text; licence: the project's own). Sentences
are lowercase words separated by single spaces, without punctuation, so that every word can be spoken
by espeak-ng and written as text with its leading space.

The fact base follows the categories of the paper's common-sense facts data set: each fact is a prompt
and a one-word completion, with a counterfactual completion from the same category.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["FUNCTION_WORDS", "Fact", "fact_base", "grammar_sentences", "is_content_word"]


@dataclass(frozen=True)
class Fact:
    """A common-sense fact: ``prompt + " " + answer`` is the true sentence, ``counterfactual`` a wrong
    completion from the same category."""

    category: str
    prompt: str
    answer: str
    counterfactual: str

    @property
    def sentence(self) -> str:
        return f"{self.prompt} {self.answer}"


# (category, template with {x} and {y}, [(x, y), ...]); y is the completion
_FACTS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "capitals",
        "the capital of {x} is {y}",
        [
            ("france", "paris"),
            ("italy", "rome"),
            ("spain", "madrid"),
            ("germany", "berlin"),
            ("japan", "tokyo"),
            ("egypt", "cairo"),
            ("russia", "moscow"),
            ("china", "beijing"),
            ("greece", "athens"),
            ("england", "london"),
            ("ireland", "dublin"),
            ("canada", "ottawa"),
        ],
    ),
    (
        "animal sounds",
        "the sound a {x} makes is {y}",
        [
            ("cow", "moo"),
            ("dog", "woof"),
            ("cat", "meow"),
            ("duck", "quack"),
            ("sheep", "baa"),
            ("pig", "oink"),
            ("owl", "hoot"),
            ("lion", "roar"),
            ("snake", "hiss"),
            ("horse", "neigh"),
        ],
    ),
    (
        "colours",
        "the colour of {x} is {y}",
        [
            ("the sky", "blue"),
            ("grass", "green"),
            ("snow", "white"),
            ("coal", "black"),
            ("a banana", "yellow"),
            ("blood", "red"),
            ("a carrot", "orange"),
            ("chocolate", "brown"),
            ("a plum", "purple"),
            ("milk", "white"),
            ("a lemon", "yellow"),
            ("a leaf", "green"),
        ],
    ),
    (
        "opposites",
        "the opposite of {x} is {y}",
        [
            ("hot", "cold"),
            ("big", "small"),
            ("up", "down"),
            ("fast", "slow"),
            ("happy", "sad"),
            ("old", "young"),
            ("light", "dark"),
            ("early", "late"),
            ("rich", "poor"),
            ("wet", "dry"),
            ("full", "empty"),
            ("loud", "quiet"),
        ],
    ),
    (
        "baby animals",
        "a young {x} is called a {y}",
        [
            ("dog", "puppy"),
            ("cat", "kitten"),
            ("cow", "calf"),
            ("sheep", "lamb"),
            ("horse", "foal"),
            ("duck", "duckling"),
            ("frog", "tadpole"),
            ("pig", "piglet"),
            ("bear", "cub"),
            ("goose", "gosling"),
        ],
    ),
    (
        "animal homes",
        "a {x} lives in a {y}",
        [
            ("bird", "nest"),
            ("bee", "hive"),
            ("dog", "kennel"),
            ("spider", "web"),
            ("rabbit", "burrow"),
            ("horse", "stable"),
            ("lion", "den"),
            ("pig", "sty"),
            ("fish", "pond"),
            ("king", "palace"),
        ],
    ),
    (
        "senses",
        "we {x} with our {y}",
        [
            ("see", "eyes"),
            ("hear", "ears"),
            ("smell", "nose"),
            ("taste", "tongue"),
            ("walk", "feet"),
            ("think", "brain"),
            ("breathe", "lungs"),
            ("chew", "teeth"),
            ("clap", "hands"),
        ],
    ),
    (
        "tools",
        "we {x} with a {y}",
        [
            ("write", "pen"),
            ("dig", "spade"),
            ("sweep", "broom"),
            ("paint", "brush"),
            ("cut", "knife"),
            ("sew", "needle"),
            ("measure", "ruler"),
            ("fish", "rod"),
            ("row", "boat"),
            ("knock", "hammer"),
        ],
    ),
    (
        "workplaces",
        "a {x} works in a {y}",
        [
            ("doctor", "hospital"),
            ("teacher", "school"),
            ("farmer", "field"),
            ("chef", "kitchen"),
            ("judge", "court"),
            ("baker", "bakery"),
            ("sailor", "ship"),
            ("librarian", "library"),
            ("miner", "mine"),
            ("pilot", "plane"),
        ],
    ),
    (
        "weekdays",
        "the day after {x} is {y}",
        [
            ("monday", "tuesday"),
            ("tuesday", "wednesday"),
            ("wednesday", "thursday"),
            ("thursday", "friday"),
            ("friday", "saturday"),
            ("saturday", "sunday"),
            ("sunday", "monday"),
        ],
    ),
    (
        "months",
        "the month after {x} is {y}",
        [
            ("january", "february"),
            ("february", "march"),
            ("march", "april"),
            ("april", "may"),
            ("may", "june"),
            ("june", "july"),
            ("july", "august"),
            ("august", "september"),
            ("september", "october"),
            ("october", "november"),
            ("november", "december"),
        ],
    ),
    (
        "materials",
        "a {x} is made of {y}",
        [
            ("table", "wood"),
            ("window", "glass"),
            ("coin", "metal"),
            ("candle", "wax"),
            ("tyre", "rubber"),
            ("brick", "clay"),
            ("sweater", "wool"),
            ("book", "paper"),
            ("shirt", "cotton"),
            ("ring", "gold"),
        ],
    ),
    (
        "origins",
        "{x} comes from {y}",
        [
            ("honey", "bees"),
            ("milk", "cows"),
            ("wool", "sheep"),
            ("flour", "wheat"),
            ("wine", "grapes"),
            ("silk", "worms"),
            ("cheese", "milk"),
            ("sugar", "cane"),
            ("rain", "clouds"),
            ("light", "lamps"),
        ],
    ),
]


def fact_base(seed: int = 0) -> list[Fact]:
    """All facts, each with a same-category counterfactual (drawn with ``seed``)."""
    rng = random.Random(seed)
    facts = []
    for category, template, pairs in _FACTS:
        answers = sorted({y for _, y in pairs})
        for x, y in pairs:
            prompt, _ = template.format(x=x, y="\0").split(" \0")
            wrong = rng.choice([a for a in answers if a != y])
            facts.append(Fact(category, prompt, y, wrong))
    return facts


_PEOPLE = [
    "the little girl",
    "the old man",
    "my brother",
    "her mother",
    "the farmer",
    "a young boy",
    "the teacher",
    "his sister",
    "the tired baker",
    "our neighbour",
    "the quiet student",
    "my father",
    "the king",
    "a tall woman",
    "the sailor",
    "her friend",
    "the doctor",
    "my grandmother",
]
_ANIMALS = ["the dog", "a black cat", "the small bird", "the old horse", "a brown rabbit", "the white duck"]
_THINGS = [
    "a red ball",
    "the heavy box",
    "an old book",
    "a green apple",
    "the wooden chair",
    "a silver key",
    "the blue cup",
    "a warm coat",
    "the broken clock",
    "a small basket",
    "the long letter",
    "a yellow kite",
    "the new lamp",
    "a bag of bread",
    "the little boat",
    "a bright candle",
    "the dirty plate",
    "a pair of shoes",
]
_PLACES = [
    "in the garden",
    "near the river",
    "at the market",
    "under the table",
    "on the hill",
    "behind the house",
    "in the kitchen",
    "by the window",
    "at the station",
    "in the forest",
    "on the bridge",
    "in the village",
    "at the school",
    "near the old church",
    "in the park",
    "on the beach",
]
_TIMES = [
    "yesterday",
    "in the morning",
    "after dinner",
    "every sunday",
    "last night",
    "before breakfast",
    "in the evening",
    "one cold winter",
    "on a rainy day",
    "at noon",
]
_VERBS = [
    "found",
    "carried",
    "painted",
    "cleaned",
    "lost",
    "bought",
    "opened",
    "dropped",
    "washed",
    "hid",
    "sold",
    "kept",
    "mended",
    "brought",
    "took",
    "wanted",
]
_INF = ["buy", "find", "sell", "mend", "wash", "fetch", "paint", "hide"]
_ADJ = ["happy", "tired", "hungry", "angry", "cold", "sleepy", "worried", "proud", "quiet", "late"]
_MOTION = ["walked", "ran", "went", "hurried", "came"]
_DEST = ["to the market", "to the river", "home", "to the school", "to the village", "into the forest"]
_WEATHER = [
    "it was raining",
    "the sun was shining",
    "the wind was strong",
    "it was very cold",
    "snow was falling",
]


def _sentence(rng: random.Random) -> str:
    who, other = rng.sample(_PEOPLE + _ANIMALS[:2], 2)
    thing, place, time = rng.choice(_THINGS), rng.choice(_PLACES), rng.choice(_TIMES)
    verb, adj = rng.choice(_VERBS), rng.choice(_ADJ)
    templates = [
        f"{who} {verb} {thing} {place}",
        f"{time} {who} {verb} {thing}",
        f"{who} {rng.choice(_MOTION)} {rng.choice(_DEST)} to {rng.choice(_INF)} {thing}",
        f"{who} was {adj} because {other} {verb} {thing}",
        f"when {who} came home {other} was {adj}",
        f"{who} said that {thing} was {place}",
        f"{time} {rng.choice(_WEATHER)} and {who} was {adj}",
        f"{rng.choice(_ANIMALS)} slept {place} while {who} {verb} {thing}",
        f"{who} gave {thing} to {other} {time}",
        f"{who} looked for {thing} {place} but {other} had {verb} it",
    ]
    return rng.choice(templates)


def grammar_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct grammar sentences (lowercase, no punctuation), deterministic given ``seed``."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen.setdefault(_sentence(rng), None)
    return list(seen)


#: Words that carry no content (articles, pronouns, auxiliaries, prepositions, conjunctions).
FUNCTION_WORDS: frozenset[str] = frozenset(
    [
        "the",
        "a",
        "an",
        "my",
        "her",
        "his",
        "our",
        "its",
        "their",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "from",
        "with",
        "into",
        "under",
        "near",
        "behind",
        "after",
        "before",
        "and",
        "but",
        "or",
        "because",
        "when",
        "while",
        "that",
        "it",
        "was",
        "is",
        "are",
        "be",
        "been",
        "had",
        "has",
        "have",
        "said",
        "every",
        "one",
        "we",
        "you",
        "our",
        "this",
        "these",
        "those",
        "then",
        "than",
        "so",
        "very",
    ]
)


def is_content_word(word: str) -> bool:
    """True unless ``word`` is a function word."""
    return word.strip().lower() not in FUNCTION_WORDS
