"""A small spoken-knowledge fact list in the style of ``slprl/common-sense-facts-audio`` (written here).

Each :class:`Fact` is a prompt, its correct completion and a counterfactual completion of the SAME
category (so a model cannot win by the category alone), e.g. ``"the capital of france is"`` /
``"paris"`` vs ``"rome"``. 12 categories x 3 facts. Used for the packaged espeak-ng fixture
(``scripts/make_knowledge_fixture.py``) and reusable for evaluating other models.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FACTS", "Fact"]


@dataclass(frozen=True)
class Fact:
    """One fact: ``prompt`` + ``correct`` is true, ``prompt`` + ``counterfactual`` is false."""

    fact_id: str
    category: str
    prompt: str
    correct: str
    counterfactual: str


def _facts(category: str, rows: list[tuple[str, str, str]]) -> list[Fact]:
    return [Fact(f"{category}-{i}", category, p, c, x) for i, (p, c, x) in enumerate(rows)]


#: The facts, in a fixed order (the fixture takes a prefix of it).
FACTS: tuple[Fact, ...] = tuple(
    _facts(
        "capitals",
        [
            ("the capital of france is", "paris", "rome"),
            ("the capital of japan is", "tokyo", "cairo"),
            ("the capital of italy is", "rome", "berlin"),
        ],
    )
    + _facts(
        "colors",
        [
            ("the color of fresh grass is", "green", "purple"),
            ("on a clear day the sky is", "blue", "orange"),
            ("fresh snow is", "white", "black"),
        ],
    )
    + _facts(
        "animals",
        [
            ("a dog says", "woof", "moo"),
            ("the animal that gives us milk is the", "cow", "shark"),
            ("a bird flies with its", "wings", "wheels"),
        ],
    )
    + _facts(
        "body",
        [
            ("we see with our", "eyes", "knees"),
            ("we hear with our", "ears", "elbows"),
            ("we smell with our", "nose", "feet"),
        ],
    )
    + _facts(
        "numbers",
        [
            ("two plus two is", "four", "nine"),
            ("a week has seven", "days", "years"),
            ("a triangle has", "three sides", "eight sides"),
        ],
    )
    + _facts(
        "time",
        [
            ("the day after monday is", "tuesday", "friday"),
            ("the month after january is", "february", "october"),
            ("we eat breakfast every", "morning", "midnight"),
        ],
    )
    + _facts(
        "weather",
        [
            ("when it rains the ground gets", "wet", "dry"),
            ("in winter the air is", "cold", "hot"),
            ("ice is made of frozen", "water", "sand"),
        ],
    )
    + _facts(
        "food",
        [
            ("bread is baked in an", "oven", "ocean"),
            ("a lemon tastes", "sour", "salty"),
            ("bees make", "honey", "cheese"),
        ],
    )
    + _facts(
        "geography",
        [
            ("the largest ocean on earth is the", "pacific", "arctic"),
            ("the sahara is a", "desert", "forest"),
            ("mount everest is a", "mountain", "river"),
        ],
    )
    + _facts(
        "sky",
        [
            ("at night we can see the", "moon", "rainbow"),
            ("the earth goes around the", "sun", "moon"),
            ("the closest star to earth is the", "sun", "pole star"),
        ],
    )
    + _facts(
        "objects",
        [
            ("we cut paper with", "scissors", "spoons"),
            ("we write on the board with", "chalk", "soap"),
            ("to open a locked door you need a", "key", "cup"),
        ],
    )
    + _facts(
        "jobs",
        [
            ("a person who treats sick people is a", "doctor", "pilot"),
            ("a person who teaches children is a", "teacher", "plumber"),
            ("a person who flies a plane is a", "pilot", "baker"),
        ],
    )
)
