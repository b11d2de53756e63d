"""The ``hear`` recipe's text: passages whose content words context cannot predict, repeated later.

Issue 21's hypotheses, as data (written for this project; licence: the project's own):

- content slots that context cannot predict: every noun, adjective, verb and name slot is a uniform
  choice among many word types (:data:`HEAR_NOUNS` etc.), so the first mention of a content word can only
  be known by hearing it;
- cross-modal dependencies inside a sequence: most passages mention their content words twice (a
  repetition, a list recalled, a question answered, a fact stated then asked), so that when the first
  mention is spoken and the second written (slamkit's Poisson spans decide), predicting the written word
  needs what was heard. There are no explicit speech-to-text pairs: the passages are plain text, spoken or
  written span by span like every other sequence;
- a held-out set with little overlap with training: passages are drawn afresh, and
  :func:`longest_shared_runs` reports the longest word run a held-out passage shares with training.

Lowercase words separated by single spaces, no punctuation (as :mod:`~slm_transformerlens.organism.corpus`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

__all__ = [
    "HEAR_ADJECTIVES",
    "HEAR_NAMES",
    "HEAR_NOUNS",
    "HEAR_VERBS",
    "hear_passages",
    "longest_shared_runs",
]

HEAR_NOUNS: tuple[str, ...] = tuple(
    [
        "apple",
        "basket",
        "blanket",
        "bottle",
        "bucket",
        "button",
        "candle",
        "carpet",
        "carrot",
        "castle",
        "cherry",
        "circle",
        "cloud",
        "coin",
        "comb",
        "cookie",
        "corner",
        "cotton",
        "cousin",
        "cradle",
        "crystal",
        "cushion",
        "diamond",
        "dinner",
        "dragon",
        "drawer",
        "engine",
        "feather",
        "fiddle",
        "finger",
        "flower",
        "forest",
        "garden",
        "giant",
        "ginger",
        "glove",
        "goat",
        "guitar",
        "hammer",
        "helmet",
        "honey",
        "island",
        "jacket",
        "jelly",
        "kettle",
        "kitten",
        "ladder",
        "lantern",
        "lemon",
        "letter",
        "lizard",
        "magnet",
        "marble",
        "meadow",
        "melon",
        "mirror",
        "monkey",
        "mountain",
        "needle",
        "noodle",
        "ocean",
        "orange",
        "oven",
        "paddle",
        "palace",
        "parrot",
        "pencil",
        "pepper",
        "piano",
        "pickle",
        "pillow",
        "pirate",
        "planet",
        "pocket",
        "potato",
        "pumpkin",
        "puppet",
        "rabbit",
        "radio",
        "rocket",
        "saddle",
        "salmon",
        "sandal",
        "saucer",
        "shadow",
        "shovel",
        "silver",
        "sister",
        "spider",
        "spoon",
        "squirrel",
        "statue",
        "sugar",
        "sweater",
        "table",
        "tiger",
        "tomato",
        "towel",
        "tractor",
        "trumpet",
        "tunnel",
        "turtle",
        "umbrella",
        "valley",
        "violin",
        "wagon",
        "walnut",
        "window",
        "wizard",
        "yogurt",
        "zebra",
        "anchor",
        "badger",
        "bishop",
        "bubble",
        "camel",
        "cannon",
        "cellar",
        "chimney",
        "cobra",
        "collar",
        "compass",
        "copper",
        "cricket",
        "dolphin",
        "donkey",
        "falcon",
        "ferry",
        "fountain",
        "gravel",
        "harbor",
        "hockey",
        "insect",
        "jungle",
        "kingdom",
        "lobster",
        "meadowlark",
        "mitten",
        "muffin",
        "napkin",
        "oyster",
        "panda",
        "peanut",
        "pebble",
        "penguin",
        "pigeon",
        "pillar",
        "plumber",
        "pony",
        "puzzle",
        "raccoon",
        "ribbon",
        "robin",
        "scarf",
        "seagull",
        "shelter",
        "skillet",
        "sparrow",
        "stable",
        "sticker",
        "summit",
        "tablet",
        "teapot",
        "thimble",
        "ticket",
        "timber",
        "toaster",
        "trolley",
        "tulip",
        "vessel",
        "walrus",
        "wallet",
        "whistle",
    ]
)
HEAR_ADJECTIVES: tuple[str, ...] = tuple(
    [
        "red",
        "blue",
        "green",
        "yellow",
        "purple",
        "orange",
        "brown",
        "golden",
        "silver",
        "black",
        "white",
        "pink",
        "tiny",
        "huge",
        "narrow",
        "wide",
        "heavy",
        "light",
        "soft",
        "hard",
        "bright",
        "dark",
        "quiet",
        "noisy",
        "gentle",
        "angry",
        "happy",
        "sleepy",
        "hungry",
        "clever",
        "brave",
        "shy",
        "funny",
        "lucky",
        "rusty",
        "dusty",
        "muddy",
        "shiny",
        "wooden",
        "woolly",
        "frozen",
        "rotten",
        "fresh",
        "sticky",
        "smooth",
        "rough",
        "round",
        "square",
        "crooked",
        "hollow",
        "ancient",
        "modern",
        "famous",
        "secret",
        "hidden",
        "broken",
        "curly",
        "fuzzy",
        "greasy",
        "spotted",
        "striped",
        "tidy",
        "messy",
        "crispy",
    ]
)
HEAR_VERBS: tuple[str, ...] = tuple(
    [
        "painted",
        "carried",
        "dropped",
        "washed",
        "counted",
        "hugged",
        "kicked",
        "lifted",
        "pushed",
        "pulled",
        "chased",
        "followed",
        "watched",
        "visited",
        "borrowed",
        "cleaned",
        "fixed",
        "opened",
        "closed",
        "polished",
        "wrapped",
        "buried",
        "hid",
        "found",
        "sold",
        "bought",
        "stole",
        "packed",
        "measured",
        "weighed",
        "tasted",
        "smelled",
        "touched",
        "threw",
        "caught",
        "fed",
        "named",
        "drew",
        "mended",
        "folded",
        "twisted",
        "shook",
        "rolled",
        "dragged",
    ]
)
HEAR_NAMES: tuple[str, ...] = tuple(
    [
        "anna",
        "ben",
        "carla",
        "david",
        "emma",
        "felix",
        "greta",
        "henry",
        "irene",
        "jacob",
        "kevin",
        "laura",
        "martin",
        "nina",
        "oscar",
        "paula",
        "quentin",
        "rosa",
        "simon",
        "tina",
        "victor",
        "wendy",
        "xavier",
        "yusuf",
        "zoe",
        "alice",
        "boris",
        "clara",
        "dmitri",
        "elena",
        "frank",
        "gloria",
        "hugo",
        "ingrid",
        "julia",
        "karl",
        "lucas",
        "maria",
        "nadia",
        "olga",
        "peter",
        "rita",
        "sven",
        "teresa",
        "ulrich",
        "vera",
        "walter",
    ]
)
_PLACES: tuple[str, ...] = ("kitchen", "garden", "attic", "station", "market", "school", "harbor", "library")


def _passage(rng: random.Random) -> str:
    n1, n2, n3 = rng.sample(HEAR_NOUNS, 3)
    a1, a2 = rng.sample(HEAR_ADJECTIVES, 2)
    who, other = rng.sample(HEAR_NAMES, 2)
    verb = rng.choice(HEAR_VERBS)
    place = rng.choice(_PLACES)
    templates = [
        # repetition
        f"{who} {verb} the {a1} {n1} yes the {a1} {n1}",
        # a list, then the list again
        f"{who} packed a {n1} a {n2} and a {n3} so the bag held a {n1} a {n2} and a {n3}",
        # a question answered from what was said
        f"{who} {verb} a {a1} {n1} in the {place} what did {who} find a {a1} {n1}",
        # a fact with a spoken subject and a later written object
        f"{who} likes the {n1} and {other} likes the {n2} who likes the {n1} {who} does",
        # who did what, asked back
        f"{who} gave the {n2} to {other} who got the {n2} it was {other}",
        # a description recalled
        f"the {n1} was {a1} and the {n2} was {a2} so the {n1} was {a1}",
        # no repetition: every slot unpredictable
        f"{who} {verb} the {a1} {n1} near the {a2} {n2}",
        f"{other} and {who} {verb} a {n3} and a {n1}",
    ]
    return rng.choice(templates)


def hear_passages(n: int, seed: int = 0, *, exclude: Sequence[str] = ()) -> list[str]:
    """``n`` distinct passages (deterministic given ``seed``), none of them in ``exclude``."""
    rng = random.Random(seed)
    banned = set(exclude)
    seen: dict[str, None] = {}
    while len(seen) < n:
        p = _passage(rng)
        if p not in banned:
            seen.setdefault(p, None)
    return list(seen)


def longest_shared_runs(heldout: Sequence[str], train: Sequence[str], *, max_n: int = 40) -> list[int]:
    """For each held-out sentence, the length of the longest word run it shares with any training sentence."""
    words = [s.split() for s in heldout]
    train_words = [s.split() for s in train]
    best = [0] * len(words)
    for n in range(1, max_n + 1):
        grams = {tuple(w[i : i + n]) for w in train_words for i in range(len(w) - n + 1)}
        found = False
        for j, w in enumerate(words):
            if best[j] == n - 1 and any(tuple(w[i : i + n]) in grams for i in range(len(w) - n + 1)):
                best[j] = n
                found = True
        if not found:
            break
    return best
