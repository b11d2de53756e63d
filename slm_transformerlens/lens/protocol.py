"""The settings of a transcription analysis, stated once and printed in every report's header.

A rate means nothing without its protocol: how a word's read-out is pooled, the k of top-k, how targets
are made, the vocabulary view, the chance controls, the word filter and the interval method.
:class:`LensProtocol` holds them and renders them as Markdown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from slm_transformerlens.lens.controls import POOLED_READOUTS, WordFilter
from slm_transformerlens.lens.metrics import summarize_transcription, transcription_table
from slm_transformerlens.lens.swap import swapped_audio_table
from slm_transformerlens.lens.targets import TargetConfig

__all__ = ["POSITION_FORMULAS", "LensProtocol"]

#: How each read-out position mode turns a word span into a rank (for report headers).
POSITION_FORMULAS: dict[str, str] = {
    "last": "the span's last token (a spoken word: its last unit)",
    "first": "the span's first token",
    "every": "every token of the span (one row each)",
    "mean": "the mean residual over the span",
    "max": "logits max-pooled over the span, l_w[v] = max_p l_p[v], then ranked",
    "any": "hit when the target is in the top-k at ANY position of the span (rank = min_p rank_p)",
    "all": "every position",
}


@dataclass(frozen=True)
class LensProtocol:
    """What a transcription analysis did (defaults: the package's defaults).

    ``controls``: the shuffled-target control and the frequency prior; ``swapped_audio``: the swapped-audio
    control (a second forward pass; skipped above ``max_swap_words`` spoken words, ``None`` / 0: no limit);
    ``n_permutations``: of the shuffled control.
    """

    positions: str = "last"
    k: int = 10
    ks: Sequence[int] = (1, 5, 10)
    view: str = "text"
    sites: Sequence[str] = ("resid_post",)
    modalities: Sequence[str] | None = ("speech",)
    lens: str = "LogitLens"
    target_config: TargetConfig = field(default_factory=TargetConfig)
    word_filter: WordFilter | None = None
    controls: bool = True
    seed: int = 0
    cluster_by: str | None = "utterance"
    n_boot: int = 1000
    confidence: float = 0.95
    swapped_audio: bool = True
    n_permutations: int = 10
    max_swap_words: int | None = 5000

    def swap_limit_reason(self, table: pd.DataFrame) -> str | None:
        """Why the swapped-audio control is not run on ``table``'s data (``None``: it is run)."""
        if not self.swapped_audio:
            return "turned off (controls without swapped-audio)"
        spoken = table[table["modality"] == "speech"].drop_duplicates(["utterance", "word_index"])
        if spoken.empty:
            return "no spoken word to swap"
        if self.max_swap_words is not None and self.max_swap_words > 0 and len(spoken) > self.max_swap_words:
            return (
                f"{len(spoken)} spoken words is more than max_swap_words={self.max_swap_words} (a second forward "
                "pass over the data); raise the limit (0: none) to run it"
            )
        return None

    def swapped_table(self, model: Any, dataset: Iterable[Any], **kwargs: Any) -> pd.DataFrame:
        """:func:`~slm_transformerlens.lens.swapped_audio_table` with this protocol's settings (the same
        as :meth:`transcription_table`'s) and seed."""
        return swapped_audio_table(
            model,
            dataset,
            seed=self.seed,
            positions=self.positions,
            modalities=self.modalities,
            sites=self.sites,
            target_config=self.target_config,
            ks=sorted({*self.ks, self.k}),
            **kwargs,
        )

    def transcription_table(self, model: Any, dataset: Iterable[Any], **kwargs: Any) -> pd.DataFrame:
        """:func:`~slm_transformerlens.lens.transcription_table` with this protocol's pooling, words,
        sites, targets and ks (``kwargs``: ``lens``, ``layers``, ``views``, ``progress``...)."""
        return transcription_table(
            model,
            dataset,
            positions=self.positions,
            modalities=self.modalities,
            sites=self.sites,
            target_config=self.target_config,
            ks=sorted({*self.ks, self.k}),
            **kwargs,
        )

    def summarize(
        self,
        table: pd.DataFrame,
        *,
        by: Sequence[str] = ("site", "view"),
        swapped: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """:func:`~slm_transformerlens.lens.summarize_transcription` with this protocol's controls,
        filter and intervals (``swapped``: the :meth:`swapped_table`, for heard)."""
        return summarize_transcription(
            table,
            ks=sorted({*self.ks, self.k}),
            by=by,
            confidence=self.confidence,
            controls=self.controls,
            seed=self.seed,
            cluster_by=self.cluster_by,
            n_boot=self.n_boot,
            word_filter=self.word_filter,
            swapped=swapped,
            n_permutations=self.n_permutations,
        )

    def targets_text(self) -> str:
        """How words become target tokens, in words."""
        config = self.target_config
        parts = [
            "first sub-token of the word in running text"
            + (" (with its leading space)" if config.leading_space else " (no leading space)")
        ]
        if config.space_variants:
            parts.append("with and without the leading space")
        if config.case_variants:
            parts.append("case variants " + ", ".join(config.case_variants))
        if config.prefixes:
            parts.append("every vocabulary token that is a prefix of the word (Wendler et al. 2024)")
        text = "; ".join(parts)
        return text + ("; a hit when ANY variant is in the top-k (min rank)" if len(parts) > 1 else "")

    def markdown(self) -> list[str]:
        """The protocol as a Markdown section (a list of lines)."""
        modalities = "all" if self.modalities is None else ", ".join(self.modalities)
        pooled = self.positions in POOLED_READOUTS
        chance = (
            f"the shuffled-target control (`shuffled_rate`): the same `{self.positions}` read-out scored against "
            "another word's targets"
            + (
                " (a hit when they are in the top-k at ANY position of the span)"
                if self.positions == "any"
                else ""
            )
            + f", mean (and `shuffled_sd`) over {self.n_permutations} seeded permutations (seeds {self.seed}.."
            f"{self.seed + self.n_permutations - 1})"
            if self.controls
            else "none computed (controls off): no rate below has a chance level"
        )
        prior = (
            "not shown: this read-out pools several positions (several tries per word), so a single fixed guess "
            "list is not its chance level"
            if pooled
            else "`prior_rate`, a single fixed guess list (the dataset's target tokens ranked by frequency; "
            "in-sample): a reference, not the chance level"
        )
        context = (
            f"swapped audio (`swapped_rate`): every spoken word's units replaced by another spoken word's "
            f"(another type, another utterance, closest unit count; seed {self.seed}), context unchanged, the "
            "ORIGINAL target scored; heard = rate - swapped_rate, paired cluster bootstrap"
            if self.swapped_audio
            else "none (swapped-audio control off): the rates do not separate hearing from guessing"
        )
        interval = f"Wilson {self.confidence:.0%}" + (
            f"; cluster bootstrap by {self.cluster_by} ({self.n_boot} draws)" if self.cluster_by else ""
        )
        return [
            "## Protocol",
            "",
            f"- read-out: {self.lens} at {', '.join(self.sites)}; pooling `{self.positions}`: "
            f"{POSITION_FORMULAS.get(self.positions, self.positions)}",
            f"- words: {modalities}; filter: {self.word_filter.describe() if self.word_filter else 'none'}",
            f"- targets: {self.targets_text()}",
            f"- hit: target in the top-{self.k} of the `{self.view}` view (k in {list(self.ks)} computed)",
            f"- chance level: {chance}",
            f"- frequency prior: {prior if self.controls else 'not computed'}",
            f"- context control: {context}",
            f"- intervals: {interval}",
            "",
        ]
