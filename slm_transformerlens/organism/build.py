"""``slm-lens organism build``: text corpus -> espeak speech -> 25 Hz units -> tokenizer -> token streams.

Writes a data directory that the training stage reads without this package's speech stack:

- ``recipe.json``: the :class:`~slm_transformerlens.organism.recipe.Recipe`;
- ``corpus.json``: training / held-out sentences and the fact base;
- ``tokenizer/``: the base text tokenizer (Hugging Face format);
- ``units_{kind}.npz`` + ``units_{kind}.json``: per rendering (sentence x voice) de-duplicated units, run
  lengths and word times, for ``kind`` in ``kmeans`` (``kmeans.npy``: the centres) and ``phoneme``
  (``phonemes.json``: the label inventory);
- ``streams_text.npz`` (``phase1``, ``text``) and ``streams_{kind}.npz`` (``interleaved``, ``speech``):
  ``[n, seq_len]`` token ids in the SIMS layout, each sequence starting with BOS.

Interleaved sequences follow slamkit: Poisson spans of spoken words over a sequence's words
(``speech.plans.poisson_span_mask``), a ``<speech>`` / ``<text>`` marker at each modality change, text
words with their leading space; speech-only sequences are bare units (no marker); text-only sequences are
plain text. The first sequences are checked against :func:`~slm_transformerlens.speech.interleave.encode_utterances`.
"""

from __future__ import annotations

import json
import random
from bisect import bisect_left, bisect_right
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from slm_transformerlens.errors import SLMError
from slm_transformerlens.organism.corpus import Fact, fact_base, grammar_sentences
from slm_transformerlens.organism.espeak import Voice, synthesize
from slm_transformerlens.organism.hear_corpus import hear_passages, longest_shared_runs
from slm_transformerlens.organism.recipe import Recipe
from slm_transformerlens.organism.tokenizer import sims_tokenizer_and_vocab, train_base_tokenizer
from slm_transformerlens.organism.units import FRAME_SECONDS, KMeansUnits, mfcc_frames, phoneme_frame_labels
from slm_transformerlens.speech.plans import poisson_span_mask
from slm_transformerlens.speech.units import dedup_units, unit_end_times

__all__ = [
    "Rendering",
    "SequenceWriter",
    "build_data",
    "fill_sequences",
    "load_renderings",
    "save_renderings",
    "text_pool",
]

_SPLITS = ("train", "heldout", "new", "fact_true", "fact_false")


class Rendering(dict):
    """One spoken sentence: ``text``, ``split``, ``voice``, ``units``, ``durations``, ``words`` [(w, s, e)]."""


def _jobs(
    recipe: Recipe, train: list[str], heldout: list[str], facts: list[Any], new: list[str] | None = None
) -> list[dict[str, Any]]:
    rng = random.Random(recipe.seed + 1)
    jobs = []
    (r0, r1), (p0, p1), (s0, s1) = recipe.voice_ranges
    for index, text in enumerate(train[: recipe.n_speech_sentences]):
        for _ in range(recipe.renderings):
            name, variant = rng.choice(recipe.train_voices)
            voice = Voice(name, variant, rng.randint(r0, r1), rng.randint(p0, p1), rng.randint(s0, s1))
            jobs.append({"text": text, "split": "train", "sentence": index, "voice": asdict(voice)})
    name, variant, rate, pitch, spread = recipe.heldout_voice
    held = asdict(Voice(name, variant, rate, pitch, spread))
    for index, text in enumerate(heldout):
        jobs.append({"text": text, "split": "heldout", "sentence": index, "voice": held})
    name, variant, rate, pitch, spread = recipe.new_voice
    other = asdict(Voice(name, variant, rate, pitch, spread))
    for index, text in enumerate(new or []):
        jobs.append({"text": text, "split": "new", "sentence": index, "voice": other})
    for index, fact in enumerate(facts[: recipe.spoken_facts]):
        jobs.append({"text": fact.sentence, "split": "fact_true", "sentence": index, "voice": held})
        jobs.append(
            {
                "text": f"{fact.prompt} {fact.counterfactual}",
                "split": "fact_false",
                "sentence": index,
                "voice": held,
            }
        )
    return jobs


def _speak(job: dict[str, Any]) -> tuple[Any, int]:
    result = synthesize(job["text"], Voice(**job["voice"]))
    return result, len(result.audio) // int(FRAME_SECONDS * 16000)


def _fit_kmeans(recipe: Recipe, jobs: list[dict[str, Any]], progress: bool) -> KMeansUnits:
    train_jobs = [j for j in jobs if j["split"] == "train"]
    rng = random.Random(recipe.seed + 2)
    chosen = rng.sample(train_jobs, min(recipe.n_kmeans_fit, len(train_jobs)))
    features = [
        mfcc_frames(_speak(j)[0].audio)
        for j in tqdm(chosen, desc="organism: k-means features", disable=not progress)
    ]
    return KMeansUnits.fit(np.concatenate(features), recipe.kmeans_units, seed=recipe.seed)


def _word_ranges(durations: list[int], words: list[tuple[str, float, float]]) -> list[tuple[int, int]]:
    ends = unit_end_times(durations, FRAME_SECONDS).tolist()
    return [(bisect_left(ends, s), bisect_right(ends, e)) for _, s, e in words]


def _render_all(
    recipe: Recipe, jobs: list[dict[str, Any]], kmeans: KMeansUnits | None, progress: bool
) -> tuple[dict[str, list[Rendering]], list[str]]:
    frames_by_kind: dict[str, list[Any]] = {"kmeans": [], "phoneme": []}
    done = []
    for job in tqdm(jobs, desc="organism: speech + units", disable=not progress):
        result, n_frames = _speak(job)
        if kmeans is not None:
            frames_by_kind["kmeans"].append(kmeans.predict(mfcc_frames(result.audio))[:n_frames])
        frames_by_kind["phoneme"].append(phoneme_frame_labels(result.phonemes, n_frames))
        done.append((job, result.words))
    inventory = sorted(
        {
            p
            for f, (j, _) in zip(frames_by_kind["phoneme"], done, strict=True)
            if j["split"] == "train"
            for p in f
        }
    )
    index = {p: i for i, p in enumerate(inventory)}
    silence = index.get("_", 0)
    out: dict[str, list[Rendering]] = {k: [] for k in ("kmeans", "phoneme") if frames_by_kind[k]}
    for kind in out:
        for frames, (job, words) in zip(frames_by_kind[kind], done, strict=True):
            ids = frames if kind == "kmeans" else [index.get(p, silence) for p in frames]
            units, durations = dedup_units(np.asarray(ids, dtype=np.int64))
            out[kind].append(
                Rendering(
                    text=job["text"],
                    split=job["split"],
                    sentence=job["sentence"],
                    voice=job["voice"],
                    units=[int(u) for u in units],
                    durations=[int(d) for d in durations],
                    words=[(w, round(s, 5), round(e, 5)) for w, s, e in words],
                )
            )
    return out, inventory


def save_renderings(path: Path, renderings: list[Rendering]) -> None:
    """Write renderings as ``path.npz`` (units, durations, offsets) and ``path.json`` (the rest)."""
    units = np.concatenate([np.asarray(r["units"], dtype=np.int16) for r in renderings])
    durations = np.concatenate([np.asarray(r["durations"], dtype=np.int16) for r in renderings])
    offsets = np.cumsum([0] + [len(r["units"]) for r in renderings]).astype(np.int64)
    np.savez_compressed(path.with_suffix(".npz"), units=units, durations=durations, offsets=offsets)
    meta = [{k: r[k] for k in ("text", "split", "sentence", "voice", "words")} for r in renderings]
    path.with_suffix(".json").write_text(json.dumps(meta))


def load_renderings(data_dir: str | Path, kind: str) -> list[Rendering]:
    """The renderings of one unit kind saved by :func:`build_data`."""
    base = Path(data_dir) / f"units_{kind}"
    with np.load(base.with_suffix(".npz")) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(base.with_suffix(".json").read_text())
    out = []
    for i, m in enumerate(meta):
        lo, hi = int(arrays["offsets"][i]), int(arrays["offsets"][i + 1])
        out.append(
            Rendering(
                **m,
                units=arrays["units"][lo:hi].astype(int).tolist(),
                durations=arrays["durations"][lo:hi].astype(int).tolist(),
            )
        )
    return out


class SequenceWriter:
    """Token ids of text / interleaved / speech-only sequences in the SIMS layout."""

    def __init__(self, tokenizer: Any, vocab: Any) -> None:
        self.tokenizer, self.vocab = tokenizer, vocab
        self.unit0 = vocab.units.start
        self.markers = vocab.markers
        self.bos = [vocab.bos_token_id] if vocab.bos_token_id is not None else []
        self.cache: dict[str, list[int]] = {}

    def word(self, w: str) -> list[int]:
        if w not in self.cache:
            self.cache[w] = list(self.tokenizer(" " + w, add_special_tokens=False)["input_ids"])
        return self.cache[w]

    def text(self, sentences: list[str]) -> list[int]:
        return self.bos + [t for s in sentences for w in s.split() for t in self.word(w)]

    def speech(self, renderings: list[Rendering]) -> list[int]:
        ids = list(self.bos)
        for r in renderings:
            ends = unit_end_times(r["durations"], FRAME_SECONDS).tolist()
            lo, hi = bisect_left(ends, r["words"][0][1]), bisect_right(ends, r["words"][-1][2])
            ids += [self.unit0 + u for u in r["units"][lo:hi]]
        return ids

    def runs(self, renderings: list[Rendering], mask: np.ndarray) -> list[tuple[int, bool, int, int]]:
        """(rendering, spoken, first word, last word + 1) runs; a spoken run owning no unit becomes text."""
        out = []
        k = 0
        for r_index, r in enumerate(renderings):
            n = len(r["words"])
            m = mask[k : k + n]
            k += n
            ends = unit_end_times(r["durations"], FRAME_SECONDS).tolist()
            i = 0
            while i < n:
                j = i
                while j + 1 < n and m[j + 1] == m[i]:
                    j += 1
                spoken = bool(m[i])
                if spoken:
                    lo, hi = bisect_left(ends, r["words"][i][1]), bisect_right(ends, r["words"][j][2])
                    spoken = hi > lo
                out.append((r_index, spoken, i, j + 1))
                i = j + 1
        return out

    def interleaved(self, renderings: list[Rendering], mask: np.ndarray) -> list[int]:
        ids = list(self.bos)
        previous = None
        for r_index, spoken, i, j in self.runs(renderings, mask):
            r = renderings[r_index]
            modality = "speech" if spoken else "text"
            if modality != previous:
                ids.append(self.markers[modality])
            previous = modality
            if spoken:
                ends = unit_end_times(r["durations"], FRAME_SECONDS).tolist()
                lo, hi = bisect_left(ends, r["words"][i][1]), bisect_right(ends, r["words"][j - 1][2])
                ids += [self.unit0 + u for u in r["units"][lo:hi]]
            else:
                ids += [t for w, _, _ in r["words"][i:j] for t in self.word(w)]
        return ids

    def check_against_package(self, renderings: list[Rendering], mask: np.ndarray, ids: list[int]) -> None:
        """Raise unless ``ids`` equal what :func:`encode_utterances` writes for the same segments."""
        from slm_transformerlens.speech.inputs import Speech, Text
        from slm_transformerlens.speech.interleave import encode_utterances
        from slm_transformerlens.speech.plans import interleave

        segments: list[Any] = []
        for r_index, spoken, i, j in self.runs(renderings, mask):
            r = renderings[r_index]
            words = [(" " + w, s, e) for w, s, e in r["words"]]
            if spoken:
                speech = Speech(r["units"], r["durations"], words=words)
                run_mask = np.zeros(len(words), dtype=bool)
                run_mask[i:j] = True
                segments += [s for s in interleave(speech, run_mask) if isinstance(s, Speech)]
            else:
                segments.append(Text(tuple(w for w, _, _ in words[i:j])))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            encoded = encode_utterances([segments], self.vocab, self.tokenizer, on_empty_word="keep")
        expected = encoded.tokens[0].tolist()
        if expected != ids:
            raise SLMError("organism: the sequence writer disagrees with encode_utterances (SIMS layout)")


def fill_sequences(
    kind: str, n: int, recipe: Recipe, writer: SequenceWriter, pool: list[Any], seed: int, progress: bool
) -> np.ndarray:
    """``n`` token rows of ``kind`` (text / interleaved / speech), drawn from ``pool`` with ``seed``."""
    rng = random.Random(seed)
    order: list[int] = []
    out = np.zeros((n, recipe.seq_len), dtype=np.uint16)
    for row in tqdm(range(n), desc=f"organism: {kind} sequences", disable=not progress):
        chosen: list[Any] = []
        ids: list[int] = []
        while len(ids) < recipe.seq_len + 1:
            if not order:
                order = list(range(len(pool)))
                rng.shuffle(order)
            chosen.append(pool[order.pop()])
            if kind == "text":
                ids = writer.text(chosen)
            elif kind == "speech":
                ids = writer.speech(chosen)
            else:
                n_words = sum(len(r["words"]) for r in chosen)
                mask = poisson_span_mask(
                    n_words,
                    mean_span=recipe.interleave_mean_span,
                    speech_fraction=recipe.interleave_fraction,
                    seed=seed * 1_000_003 + row,
                )
                ids = writer.interleaved(chosen, mask)
                if row < 8 and len(ids) >= recipe.seq_len + 1:
                    writer.check_against_package(chosen, mask, ids)
        out[row] = ids[: recipe.seq_len]
    return out


def text_pool(corpus: dict[str, Any], recipe: Recipe) -> list[str]:
    """The text sentences sequences are drawn from: the training sentences and the fact base repeated to
    ``recipe.fact_fraction`` of them (``corpus`` as in ``corpus.json``)."""
    facts = [Fact(**f).sentence if isinstance(f, dict) else f.sentence for f in corpus["facts"]]
    train = list(corpus["train"])
    return train + facts * max(1, round(recipe.fact_fraction * len(train) / len(facts)))


def _sentences(recipe: Recipe) -> tuple[list[str], list[str], list[str]]:
    """Training, held-out and new-speech sentences of ``recipe``'s corpus."""
    n, held = recipe.n_text_sentences, recipe.n_heldout_sentences
    if recipe.corpus == "grammar":
        sentences = grammar_sentences(n + held, seed=recipe.seed)
        return sentences[:-held], sentences[-held:], []
    if recipe.corpus != "hear":
        raise SLMError(f"unknown organism corpus {recipe.corpus!r}; use 'grammar' or 'hear'")
    sentences = hear_passages(n + held, seed=recipe.seed)
    train, heldout = sentences[:-held], sentences[-held:]
    new = hear_passages(recipe.n_new_sentences, seed=recipe.seed + 1000, exclude=sentences)
    return train, heldout, new


def build_data(out_dir: str | Path, recipe: Recipe | None = None, *, progress: bool = True) -> Path:
    """Run the build stages (cached: a stage whose output exists is skipped) and return ``out_dir``."""
    recipe = recipe or Recipe()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe.to_json(out / "recipe.json")
    train, heldout, new = _sentences(recipe)
    facts = fact_base(recipe.seed)
    corpus = {"train": train, "heldout": heldout, "facts": [asdict(f) for f in facts]}
    if new:
        runs = {"heldout": longest_shared_runs(heldout, train), "new": longest_shared_runs(new, train)}
        corpus |= {"new": new, "longest_shared_run": runs}
    (out / "corpus.json").write_text(json.dumps(corpus, indent=0))
    texts = text_pool({"train": train, "facts": facts}, recipe)
    tokenizer_dir = out / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").exists():
        train_base_tokenizer(texts, tokenizer_dir, vocab_size=recipe.tokenizer_vocab)
    if not all((out / f"units_{k}.npz").exists() for k in recipe.unit_kinds):
        jobs = _jobs(recipe, train, heldout, facts, new)
        kmeans = None
        if "kmeans" in recipe.unit_kinds:  # a phoneme-only build skips the MFCC features
            kmeans = _fit_kmeans(recipe, jobs, progress)
            np.save(out / "kmeans.npy", kmeans.centres)
        renderings, inventory = _render_all(recipe, jobs, kmeans, progress)
        (out / "phonemes.json").write_text(json.dumps(inventory))
        for kind in recipe.unit_kinds:
            save_renderings(out / f"units_{kind}", renderings[kind])
    n1 = -(-recipe.phase1_tokens // recipe.seq_len)
    n2 = -(-recipe.phase2_tokens // recipe.seq_len)
    if not (out / "streams_text.npz").exists():
        tokenizer, vocab = sims_tokenizer_and_vocab(tokenizer_dir, recipe.kmeans_units)
        writer = SequenceWriter(tokenizer, vocab)
        np.savez_compressed(
            out / "streams_text.npz",
            phase1=fill_sequences("text", n1, recipe, writer, texts, recipe.seed + 10, progress),
            text=fill_sequences("text", n2, recipe, writer, texts, recipe.seed + 11, progress),
        )
    sizes = {"base_vocab": None, "n_units": {}}
    for kind in recipe.unit_kinds:
        n_units = (
            recipe.kmeans_units if kind == "kmeans" else len(json.loads((out / "phonemes.json").read_text()))
        )
        tokenizer, vocab = sims_tokenizer_and_vocab(tokenizer_dir, n_units)
        sizes["base_vocab"] = vocab.units.start
        sizes["n_units"][kind] = n_units
        path = out / f"streams_{kind}.npz"
        if path.exists():
            continue
        writer = SequenceWriter(tokenizer, vocab)
        pool = [r for r in load_renderings(out, kind) if r["split"] == "train"]
        np.savez_compressed(
            path,
            interleaved=fill_sequences("interleaved", n2, recipe, writer, pool, recipe.seed + 20, progress),
            speech=fill_sequences("speech", n2, recipe, writer, pool, recipe.seed + 21, progress),
        )
    (out / "vocab.json").write_text(json.dumps(sizes, indent=2))
    return out
