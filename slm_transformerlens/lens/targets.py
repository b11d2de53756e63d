"""Target token ids of words: what the lens should find for a spoken word.

The paper's target is the first sub-token of the word as the model's tokenizer writes it in running
text (with the leading space where the tokenizer uses one). Options (all in :class:`TargetConfig`):
case variants of the word, and Wendler et al. (2024)'s prefix tokens (every vocabulary token that is
a prefix of the word's running-text spelling, whose probabilities are summed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slm_transformerlens.lens.base import LensError

__all__ = ["CASE_VARIANTS", "TargetConfig", "WordTargetResolver", "WordTargets"]

#: Case variants :class:`TargetConfig` understands.
CASE_VARIANTS: tuple[str, ...] = ("lower", "upper", "capitalize", "title")
_SPACE_MARKERS = ("Ġ", "▁", " ")


@dataclass(frozen=True)
class TargetConfig:
    """How a word becomes target token ids.

    Attributes:
        leading_space: write the word as it appears after a space in running text (default, the
            paper's convention); ``False`` writes it glued to the preceding text.
        case_variants: also accept these spellings (``"lower"``, ``"upper"``, ``"capitalize"``, ``"title"``).
        prefixes: also accept every vocabulary token that is a prefix of the word's running-text spelling
            (Wendler et al. 2024); ranks take the best member, probabilities the sum.
        space_variants: also accept the first token of each spelling written the other way (without the
            leading space when ``leading_space``, with it otherwise). Every accepted id is one member of the
            target set: a word is a top-k hit when ANY variant is in the top-k (its rank is the min).
        context: the text placed before the word when tokenizing it, so that the tokenizer's own
            running-text convention applies; its tokens are removed afterwards.
        strip_chars: characters stripped from both ends of the word first (alignment punctuation).
    """

    leading_space: bool = True
    case_variants: tuple[str, ...] = ()
    prefixes: bool = False
    space_variants: bool = False
    context: str = "."
    strip_chars: str = ' \t\n.,;:!?"()[]'

    def __post_init__(self) -> None:
        bad = [v for v in self.case_variants if v not in CASE_VARIANTS]
        if bad:
            raise LensError(f"unknown case variants {bad}; choose from {list(CASE_VARIANTS)}")


@dataclass(frozen=True)
class WordTargets:
    """Targets of one word: ``first_id`` (the paper's target) and the full accepted set ``ids``."""

    word: str
    first_id: int | None
    ids: tuple[int, ...]


class WordTargetResolver:
    """Resolve words to :class:`WordTargets` for one tokenizer (results cached per word).

    Args:
        tokenizer: the model's tokenizer (``model.tokenizer``).
        config: a :class:`TargetConfig`.
        allowed_ids: if given, ids outside this set are dropped from ``ids`` (e.g. the text group).
    """

    def __init__(
        self, tokenizer: Any, config: TargetConfig | None = None, allowed_ids: Sequence[int] | None = None
    ):
        if tokenizer is None:
            raise LensError("word targets need the model's tokenizer (model.tokenizer is None)")
        self.tokenizer = tokenizer
        self.config = config or TargetConfig()
        self.allowed = None if allowed_ids is None else {int(i) for i in allowed_ids}
        self._cache: dict[str, WordTargets] = {}
        self._pieces: dict[str, int] | None = None
        self._context_ids = self._encode(self.config.context) if self.config.context else []

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def running_text_ids(self, word: str) -> list[int]:
        """Token ids of ``word`` as written in running text (after ``config.context``)."""
        glue = " " if self.config.leading_space else ""
        if self.config.context:
            full = self._encode(self.config.context + glue + word)
            n = len(self._context_ids)
            if full[:n] == self._context_ids and len(full) > n:
                return full[n:]
        return self._encode(glue + word) if self.config.leading_space else self._encode(word)

    def _prefix_ids(self, ids: list[int]) -> list[int]:
        if self._pieces is None:
            self._pieces = {str(k): int(v) for k, v in self.tokenizer.get_vocab().items()}
        pieces = self.tokenizer.convert_ids_to_tokens(ids)
        spelled = "".join(str(p) for p in pieces)
        marker = len(spelled) - len(spelled.lstrip("".join(_SPACE_MARKERS)))
        out = []
        for end in range(marker + 1, len(spelled) + 1):
            token_id = self._pieces.get(spelled[:end])
            if token_id is not None:
                out.append(token_id)
        return out

    def __call__(self, word: str) -> WordTargets:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        clean = str(word).strip(self.config.strip_chars)
        if not clean:
            result = WordTargets(str(word), None, ())
        else:
            spellings = [clean] + [_case(clean, v) for v in self.config.case_variants]
            ids: list[int] = []
            first_id = None
            for i, spelling in enumerate(dict.fromkeys(spellings)):
                running = self.running_text_ids(spelling)
                if not running:
                    continue
                if i == 0:
                    first_id = int(running[0])
                candidates = [running[0]] + (self._prefix_ids(running) if self.config.prefixes else [])
                if self.config.space_variants:
                    other = self._encode(spelling if self.config.leading_space else " " + spelling)
                    candidates += other[:1]
                ids.extend(int(c) for c in candidates)
            unique = tuple(dict.fromkeys(i for i in ids if self.allowed is None or i in self.allowed))
            if first_id is not None and self.allowed is not None and first_id not in self.allowed:
                first_id = None
            result = WordTargets(str(word), first_id, unique)
        self._cache[word] = result
        return result


def _case(word: str, variant: str) -> str:
    return {"lower": word.lower, "upper": word.upper, "capitalize": word.capitalize, "title": word.title}[
        variant
    ]()
