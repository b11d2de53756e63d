"""``slm-lens organism evaluate``: the lens analysis of the organisms on a held-out voice and sentences.

For every checkpoint, on the held-out voice speaking held-out sentences (bare units, as slamkit
evaluates speech), with the package's logit lens (:func:`~slm_transformerlens.lens.transcription_table`,
text-restricted ranks and the full view):

- ``transcription_span``: the CURRENT content word's target token is in the top-10 at any unit position
  of its span (read-out over the span); ``transcription_last``: at its last unit;
- ``next_word``: the NEXT content word's target in the top-10 at the current word's last unit;
- each with a shuffled-target control: the same read-out scored against the targets of other content
  words (:func:`~slm_transformerlens.lens.controls.shuffled_control`, the mean over 10 seeded
  permutations, its interval the mean -/+ 1.96 sd over them), and a frequency prior (the 10 most frequent
  text tokens of the training text as a constant guess; a chance level for ``transcription_last`` only);
- heard above context (:func:`evaluate_heard`, :mod:`~slm_transformerlens.organism.heard`): each rate
  minus the rate with the word's audio swapped for another word's, context unchanged, at read-outs
  ``any``, ``max`` and ``last``, with a paired cluster bootstrap; the headline of the report;
- ``mass_speech`` / ``mass_text`` / ``mass_marker``: softmax mass of each vocabulary group at spoken
  positions (full view);
- 95% intervals: cluster bootstrap over utterances (words of one sentence are not independent);
- spoken knowledge: the fact base spoken by the held-out voice, correct vs same-category
  counterfactual completion scored by the mean log-probability of the completion's units (slamkit's
  length-normalised likelihood), and the same on text.

The frequency prior, the shuffled-target control, the swapped-audio control and the cluster bootstrap
are :mod:`slm_transformerlens.lens.controls`' own (:func:`~slm_transformerlens.lens.controls.cluster_bootstrap`
with index draws reproduces the rates' intervals of the earlier shipped numbers); content words are the
corpus' (:func:`~slm_transformerlens.organism.corpus.is_content_word`), not
:class:`~slm_transformerlens.lens.controls.WordFilter`'s stop list.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from slm_transformerlens.lens.controls import cluster_bootstrap, frequency_prior_hits
from slm_transformerlens.organism.build import load_renderings
from slm_transformerlens.organism.corpus import is_content_word
from slm_transformerlens.organism.heard import HEARD_READOUTS, acceptance, heard_curves

__all__ = [
    "evaluate_all",
    "evaluate_checkpoint",
    "evaluate_heard",
    "heard_acceptance",
    "peak_difference",
]

K = 10


def _mean_interval(values: np.ndarray, clusters: np.ndarray, *, seed: int) -> tuple[float, float, float]:
    """Mean of ``values`` and its 95% interval when whole ``clusters`` are resampled
    (:func:`~slm_transformerlens.lens.controls.cluster_bootstrap`, index draws)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    low, high = cluster_bootstrap(values, clusters, seed=seed, draw="indices")
    return float(values.mean()), low, high


def peak_difference(
    hits_a: pd.DataFrame, hits_b: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Peak rate over layers of ``a`` minus that of ``b`` (each at its own peak layer), with a 95% paired
    cluster-bootstrap interval over utterances (the peak is re-selected in every resample).

    ``hits_*``: columns ``utterance, word_index, layer, hit`` on the same utterances.
    """

    def matrix(hits: pd.DataFrame, utterances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        layers = np.sort(hits["layer"].unique())
        u_index = {u: i for i, u in enumerate(utterances)}
        sums = np.zeros((len(utterances), len(layers)))
        counts = np.zeros((len(utterances), len(layers)))
        rows = hits["utterance"].map(u_index).to_numpy()
        cols = np.searchsorted(layers, hits["layer"].to_numpy())
        np.add.at(sums, (rows, cols), hits["hit"].to_numpy())
        np.add.at(counts, (rows, cols), 1.0)
        return sums, counts

    utterances = np.union1d(hits_a["utterance"].unique(), hits_b["utterance"].unique())
    (sa, ca), (sb, cb) = matrix(hits_a, utterances), matrix(hits_b, utterances)

    def peak(s: np.ndarray, c: np.ndarray) -> np.ndarray | np.floating:
        return np.nanmax(s / np.maximum(c, 1e-12), axis=-1)

    point = float(peak(sa.sum(0), ca.sum(0)) - peak(sb.sum(0), cb.sum(0)))
    draw = np.random.default_rng(seed).integers(0, len(utterances), size=(n_boot, len(utterances)))
    boot = peak(sa[draw].sum(1), ca[draw].sum(1)) - peak(sb[draw].sum(1), cb[draw].sum(1))
    low, high = np.percentile(boot, [2.5, 97.5])
    return point, float(low), float(high)


def _speech(r: dict[str, Any]) -> Any:
    from slm_transformerlens.speech.inputs import Speech

    return Speech(
        r["units"], r["durations"], words=[(w, s, e) for w, s, e in r["words"]], transcript=r["text"]
    )


def _encode(model: Any, utterances: list[Any]) -> Any:
    from slm_transformerlens.speech.interleave import encode_utterances

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return encode_utterances(utterances, model.speech_vocab, model.tokenizer, on_empty_word="warn")


def _table(model: Any, batches: list[Any], spans_list: list[pd.DataFrame]) -> pd.DataFrame:
    from slm_transformerlens.lens import transcription_table

    items = [
        {"tokens": b.tokens, "attention_mask": b.attention_mask, "word_spans": s}
        for b, s in zip(batches, spans_list, strict=True)
    ]
    table = transcription_table(
        model,
        items,
        positions="every",
        views=("full",),
        ks=(K,),
        top_k=3,
        token_strings=False,
        progress=False,
    )
    return table


def _frequency_prior(data_dir: Path, tokenizer: Any) -> list[int]:
    """The first sub-tokens of the training text's content words, most frequent first: its first 10 are
    the best constant top-10 guess for content words."""
    corpus = json.loads((data_dir / "corpus.json").read_text())
    if "content_counts" in corpus:  # a packaged evaluation set keeps only the counts
        counts: Counter[str] = Counter(corpus["content_counts"])
    else:
        counts = Counter(w for s in corpus["train"] for w in s.split() if is_content_word(w))
    firsts: Counter[int] = Counter()
    for word, count in counts.items():
        firsts[tokenizer(" " + word, add_special_tokens=False)["input_ids"][0]] += count
    return [t for t, _ in firsts.most_common()]


def _hits(table: pd.DataFrame, *, rank: str, word: str) -> pd.DataFrame:
    """Per (utterance, word, layer) top-10 hits of a read-out table (text view), content words only."""
    t = table[table[rank].notna()]
    t = t[t[word].map(lambda w: isinstance(w, str) and is_content_word(w))]
    hit = (t[rank].astype("float64") < K).astype(float)
    return t[["utterance", "word_index", "layer"]].assign(hit=hit.to_numpy()).reset_index(drop=True)


def _curve(hits: pd.DataFrame, metric: str, seed: int) -> list[dict[str, Any]]:
    rows = []
    for layer, g in hits.groupby("layer"):
        mean, low, high = _mean_interval(g["hit"].to_numpy(), g["utterance"].to_numpy(), seed=seed)
        rows.append(
            {
                "metric": metric,
                "layer": int(layer),
                "rate": mean,
                "ci_low": low,
                "ci_high": high,
                "n": len(g),
            }
        )
    return rows


def _readout_tables(model: Any, batches: list[Any], lens: Any = None) -> dict[str, pd.DataFrame]:
    """The text-view read-out tables: ``any`` unit of each word's span and its ``last`` unit (``lens``:
    the logit lens by default; ``scripts/organism_patchscope.py`` passes a patchscope)."""
    from slm_transformerlens.lens import transcription_table

    kwargs = {"views": ("text",), "ks": (K,), "top_k": K, "token_strings": False, "progress": False}
    kwargs["lens"] = lens
    return {p: transcription_table(model, batches, positions=p, **kwargs) for p in ("any", "last")}


def _shuffled_curves(tables: dict[str, pd.DataFrame], *, seed: int) -> dict[str, list[dict[str, Any]]]:
    """The shuffled-target control of each metric (:func:`~slm_transformerlens.lens.controls.shuffled_control`,
    the mean over 10 seeded permutations among content words, same read-out): ``transcription_span`` at any
    unit of the span, ``transcription_last`` and ``next_word`` at the last unit. ``ci_low`` / ``ci_high``
    are the mean -/+ 1.96 standard deviations over the permutations (their spread, not a bootstrap)."""
    from slm_transformerlens.lens import controls

    def content(table: pd.DataFrame, column: str) -> pd.DataFrame:
        return table[table[column].map(lambda w: isinstance(w, str) and is_content_word(w))]

    specs = {
        "transcription_span": ("any", "word", "transcription", "rank"),
        "transcription_last": ("last", "word", "transcription", "rank"),
        "next_word": ("last", "next_word", "next_word", "next_rank"),
    }
    out: dict[str, list[dict[str, Any]]] = {}
    for name, (positions, column, metric, rank) in specs.items():
        table = content(tables[positions], column)
        table = table[table[rank].notna()]
        control = controls.shuffled_control(table, ks=(K,), n_permutations=10, seed=seed, by=("view",))
        control = control[control["metric"] == metric]
        counts = table.groupby("layer").size()
        out[name] = [
            {
                "layer": int(r.layer),
                "rate": float(r.shuffled_rate),
                "ci_low": float(r.shuffled_rate - 1.96 * r.shuffled_sd),
                "ci_high": float(r.shuffled_rate + 1.96 * r.shuffled_sd),
                "n": int(counts.get(r.layer, 0)),
            }
            for r in control.itertuples()
        ]
    return out


def _completion_scores(model: Any, utterances: list[Any], batch_size: int = 64) -> list[float]:
    """Mean log-probability of the last word's tokens (units or text) of each utterance."""
    scores: list[float] = []
    for start in range(0, len(utterances), batch_size):
        encoded = _encode(model, [[u] for u in utterances[start : start + batch_size]])
        with torch.no_grad():
            logits = model(
                encoded.tokens.to(model.cfg.device),
                attention_mask=encoded.attention_mask.to(model.cfg.device),
            )
        logp = torch.log_softmax(logits.float().cpu(), -1)
        last = encoded.word_spans.groupby("utterance").tail(1).set_index("utterance")
        for b in range(encoded.tokens.shape[0]):
            lo, hi = int(last.loc[b, "start"]), int(last.loc[b, "stop"])
            ids = encoded.tokens[b, lo:hi]
            scores.append(float(logp[b, lo - 1 : hi - 1].gather(-1, ids[:, None]).mean()))
    return scores


def _knowledge(model: Any, renderings: list[dict[str, Any]], facts: list[dict[str, Any]]) -> dict[str, Any]:
    """Spoken and written fact accuracy: correct vs counterfactual completion (ties count 0.5)."""
    from slm_transformerlens.speech.inputs import Text

    by_key = {(r["split"], r["sentence"]): r for r in renderings}
    pairs = [
        (by_key[("fact_true", i)], by_key[("fact_false", i)])
        for i in range(len(facts))
        if ("fact_true", i) in by_key and ("fact_false", i) in by_key
    ]
    speech = _completion_scores(model, [_speech(r) for pair in pairs for r in pair])
    texts = [
        Text(tuple(" " + w for w in f"{f['prompt']} {answer}".split()))
        for f in facts
        for answer in (f["answer"], f["counterfactual"])
    ]
    text = _completion_scores(model, texts)

    def accuracy(scores: list[float]) -> list[float]:
        a, b = np.asarray(scores[0::2]), np.asarray(scores[1::2])
        return list(np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0)))

    speech_acc, text_acc = accuracy(speech), accuracy(text)
    return {
        "speech_accuracy": float(np.mean(speech_acc)) if speech_acc else float("nan"),
        "speech_n": len(speech_acc),
        "text_accuracy": float(np.mean(text_acc)),
        "text_n": len(text_acc),
    }


def _check_device(device: str | None) -> None:
    """Fail before any output or compute when ``device`` is not a device this machine can run fp32 on.

    Raises:
        SLMError: an unknown device string (``"gpu"``); a ``CheckpointError`` for an absent device.
    """
    from slm_transformerlens.checkpoints.dtypes import check_dtype_supported
    from slm_transformerlens.errors import SLMError

    try:
        where = torch.device(device or "cpu")
    except RuntimeError as error:
        raise SLMError(f"unknown device {device!r}; use cpu, cuda or cuda:N ({error})") from error
    check_dtype_supported(torch.float32, where)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_dir: str | Path,
    *,
    kind: str | None = None,
    batch_size: int = 32,
    seed: int = 0,
    device: str | None = None,
) -> dict[str, Any]:
    """Per-layer curves (with controls and intervals), modality masses and knowledge of one checkpoint
    (loaded on ``device``: CPU by default)."""
    import slm_transformerlens as slt

    checkpoint, data_dir = Path(checkpoint), Path(data_dir)
    config = json.loads((checkpoint / "config.json").read_text())
    kind = kind or config.get("organism", {}).get("unit_kind", "kmeans")
    model = slt.load(checkpoint, tokenizer=checkpoint / "base_tokenizer", device=device, progress=False)
    renderings = load_renderings(data_dir, kind)
    heldout = [r for r in renderings if r["split"] == "heldout" and r["words"]]
    batches, spans_true = [], []
    for start in range(0, len(heldout), batch_size):
        encoded = _encode(model, [[_speech(r)] for r in heldout[start : start + batch_size]])
        batches.append(encoded)
        spans_true.append(encoded.word_spans)
    full_table = _table(model, batches, spans_true)  # modality masses at every spoken position
    tables = _readout_tables(model, batches)
    curves: list[dict[str, Any]] = []
    hits_by_metric: dict[str, pd.DataFrame] = {}
    specs = {
        "transcription_span": ("rank", "word", "any"),
        "transcription_last": ("rank", "word", "last"),
        "next_word": ("next_rank", "next_word", "last"),
    }
    shuffled = _shuffled_curves(tables, seed=seed)
    prior = _frequency_prior(data_dir, model.tokenizer)
    for name, (rank, word, positions) in specs.items():
        hits = _hits(tables[positions], rank=rank, word=word)
        hits_by_metric[name] = hits
        curves += _curve(hits, name, seed)
        curves += [row | {"metric": name + "_shuffled"} for row in shuffled[name]]
        # frequency prior: a constant top-10 guess of the most frequent text tokens
        t = tables["any"][tables["any"]["layer"] == tables["any"]["layer"].min()]
        target = "target_id" if rank == "rank" else "next_target_id"
        t = t[t[word].map(lambda w: isinstance(w, str) and is_content_word(w)) & t[target].notna()]
        t = t.drop_duplicates(["utterance", "word_index"])
        metric = "transcription" if rank == "rank" else "next_word"
        hit = frequency_prior_hits(t, [K], metric=metric, ranking=prior)[K]
        mean, low, high = _mean_interval(hit, t["utterance"].to_numpy(), seed=seed)
        curves.append(
            {
                "metric": name + "_prior",
                "layer": -1,
                "rate": mean,
                "ci_low": low,
                "ci_high": high,
                "n": len(hit),
            }
        )
    full = full_table[full_table["view"] == "full"]
    for group in [c for c in full.columns if c.startswith("mass_")]:
        for layer, g in full.groupby("layer"):
            mean, low, high = _mean_interval(g[group].to_numpy(), g["utterance"].to_numpy(), seed=seed)
            curves.append(
                {
                    "metric": group,
                    "layer": int(layer),
                    "rate": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "n": len(g),
                }
            )
    corpus = json.loads((data_dir / "corpus.json").read_text())
    knowledge = _knowledge(model, renderings, corpus["facts"])
    return {
        "checkpoint": str(checkpoint),
        "variant": config.get("organism", {}).get("variant"),
        "unit_kind": kind,
        "n_layers": int(model.cfg.n_layers),
        "n_utterances": len(heldout),
        "curves": curves,
        "knowledge": knowledge,
        "hits": hits_by_metric,
    }


def evaluate_heard(
    checkpoint: str | Path,
    data_dir: str | Path,
    *,
    splits: tuple[str, ...] = ("heldout", "new"),
    readouts: tuple[str, ...] = HEARD_READOUTS,
    seed: int = 0,
    device: str | None = None,
) -> pd.DataFrame:
    """Heard above context (:func:`~slm_transformerlens.organism.heard.heard_curves`) of one checkpoint on
    each test split present in ``data_dir`` (``heldout``: held-out sentences, held-out voice; ``new``: new
    passages in a second unseen voice, ``hear`` recipe only). Columns ``split, readout, layer, n, rate,
    swapped_rate, heard, heard_low, heard_high``. The model is loaded on ``device`` (CPU by default)."""
    import slm_transformerlens as slt

    checkpoint, data_dir = Path(checkpoint), Path(data_dir)
    config = json.loads((checkpoint / "config.json").read_text())
    kind = config.get("organism", {}).get("unit_kind", "kmeans")
    model = slt.load(checkpoint, tokenizer=checkpoint / "base_tokenizer", device=device, progress=False)
    renderings = load_renderings(data_dir, kind)
    frames = []
    for split in splits:
        dataset = [_speech(r) for r in renderings if r["split"] == split and r["words"]]
        if dataset:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                curves = heard_curves(model, dataset, readouts=readouts, seed=seed)
            frames.append(curves.assign(split=split))
    return pd.concat(frames, ignore_index=True)


def heard_acceptance(heard: pd.DataFrame, *, main: str, baselines: tuple[str, ...]) -> dict[str, Any]:
    """Issue 21's acceptance per test split (``heard`` with a ``model`` column): at some layer strictly
    between the first and the last, ``main``'s heard 95% lower bound (read-out ``any``) is above 0 and
    above every baseline's best heard."""
    out = {}
    for split, part in heard.groupby("split"):
        present = [b for b in baselines if b in set(part["model"])]
        out[str(split)] = acceptance(
            part[part["model"] == main], {b: part[part["model"] == b] for b in present}
        ) | {"main": main}
    return out


def evaluate_all(
    models_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    threads: int | None = 1,
    heard: bool = True,
    device: str | None = None,
) -> pd.DataFrame:
    """Evaluate every checkpoint under ``models_dir``; write ``curves.csv`` and ``knowledge.json``, and
    with ``heard`` (default) ``heard.csv`` (every read-out, every test split) and ``heard_acceptance.json``
    (issue 21's criterion for each ``main_{units}`` against its ``random_init`` / ``untrained_units``).

    ``threads``: torch CPU threads (1 by default: these models are small, and on a busy machine more
    threads are much slower). ``device``: where each model runs (CPU by default; ``"cuda"`` evaluates the
    same fp32 read-outs on a GPU).
    """
    from slm_transformerlens.organism.inputs import check_evaluation_inputs
    from slm_transformerlens.outputs import claim_output_files

    check_evaluation_inputs(models_dir, data_dir)
    _check_device(device)
    written = ("curves.csv", "knowledge.json", "differences.json", "heard.csv", "heard_acceptance.json")
    claim_output_files(out_dir, (*written, "results.md"))  # results.md: `organism evaluate` writes it
    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames, knowledge, hits, heard_frames = [], {}, {}, []
    for checkpoint in sorted(p.parent for p in Path(models_dir).glob("*/config.json")):
        result = evaluate_checkpoint(checkpoint, data_dir, device=device)
        frame = pd.DataFrame(result["curves"]).assign(model=checkpoint.name)
        frames.append(frame)
        knowledge[checkpoint.name] = result["knowledge"] | {
            "variant": result["variant"],
            "unit_kind": result["unit_kind"],
            "n_utterances": result["n_utterances"],
            "n_layers": result["n_layers"],
        }
        hits[checkpoint.name] = result["hits"]["transcription_span"]
        if heard:
            heard_frames.append(
                evaluate_heard(checkpoint, data_dir, device=device).assign(model=checkpoint.name)
            )
        print(f"evaluated {checkpoint.name}", flush=True)
    curves = pd.concat(frames, ignore_index=True)
    curves.to_csv(out / "curves.csv", index=False)
    differences = []
    for name, info in knowledge.items():
        main = f"main_{info['unit_kind']}"
        if name != main and main in hits:
            point, low, high = peak_difference(hits[main], hits[name])
            differences.append(
                {"model": name, "versus": main, "peak_difference": point, "ci_low": low, "ci_high": high}
            )
    (out / "knowledge.json").write_text(json.dumps(knowledge, indent=2))
    (out / "differences.json").write_text(json.dumps(differences, indent=2))
    if heard_frames:
        table = pd.concat(heard_frames, ignore_index=True)
        table.to_csv(out / "heard.csv", index=False)
        verdicts = {
            main: heard_acceptance(
                table, main=main, baselines=(f"random_init_{kind}", f"untrained_units_{kind}")
            )
            for kind in sorted({info["unit_kind"] for info in knowledge.values()})
            if (main := f"main_{kind}") in knowledge
        }
        (out / "heard_acceptance.json").write_text(json.dumps(verdicts, indent=2))
    return curves
