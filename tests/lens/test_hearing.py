"""Hearing vs guessing: the shuffled control re-read by hand, the swapped-audio control run by hand, and
planted hearers and guessers classified by heard = rate - swapped-audio rate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from slm_transformerlens.builders import (
    PlantError,
    guesser_lookup,
    hearer_lookup,
    plant_guesser,
    plant_hearer,
)
from slm_transformerlens.lens import (
    LensError,
    WordTargetResolver,
    heard_headline,
    heard_peak,
    heard_rates,
    shuffled_control,
    shuffled_partners,
    summarize_transcription,
    swap_audio,
    swapped_audio_table,
    transcription_table,
)
from slm_transformerlens.spans import EncodedBatch
from tests.conftest import distinct_words

SPAN_COLUMNS = ["utterance", "word_index", "word", "modality", "start", "stop"]
PLANTED = (2, 3)  # blocks a..b of the plants, in a 6-layer model


def _speech_data(model, n_utterances: int = 12, seed: int = 0) -> list[EncodedBatch]:
    """All-speech utterances of 5 spoken words (random units, 1-4 each) over 8 word types."""
    vocab = model.speech_vocab
    words = distinct_words(WordTargetResolver(model.tokenizer), 8)
    rng = np.random.default_rng(seed)
    data = []
    for _ in range(n_utterances):
        ids, rows = [1, vocab.markers["speech"]], []
        for j in range(5):
            start = len(ids)
            n = int(rng.integers(1, 5))
            ids += vocab.unit_token_ids(torch.as_tensor(rng.integers(0, vocab.n_units, n))).tolist()
            rows.append((0, j, words[int(rng.integers(0, 8))], "speech", start, len(ids)))
        data.append(EncodedBatch(torch.tensor([ids]), None, pd.DataFrame(rows, columns=SPAN_COLUMNS)))
    return data


def _interleaved_data(model, n_utterances: int = 24, seed: int = 0) -> list[EncodedBatch]:
    """Utterances of 4 (written word, [Speech], spoken word, [Text]) pairs; written word i is always
    followed by spoken word i, spoken in 2-4 random units (new units at every occurrence, as real speech
    varies: a random model cannot read a type's target from fixed units by chance)."""
    vocab, tok = model.speech_vocab, model.tokenizer
    words = distinct_words(WordTargetResolver(tok), 16)
    written, spoken = words[8:], words[:8]
    rng = np.random.default_rng(seed)
    data = []
    for _ in range(n_utterances):
        ids, rows = [1], []
        for j in range(4):
            i = int(rng.integers(0, 8))
            start = len(ids)
            ids += tok(" " + written[i], add_special_tokens=False).input_ids
            rows.append((0, 2 * j, written[i], "text", start, len(ids)))
            ids.append(vocab.markers["speech"])
            start = len(ids)
            ids += vocab.unit_token_ids(torch.as_tensor(rng.integers(0, vocab.n_units, 2 + i % 3))).tolist()
            rows.append((0, 2 * j + 1, spoken[i], "speech", start, len(ids)))
            ids.append(vocab.markers["text"])
        data.append(EncodedBatch(torch.tensor([ids]), None, pd.DataFrame(rows, columns=SPAN_COLUMNS)))
    return data


@pytest.fixture(scope="module")
def six_layers(tmp_path_factory):
    """A tiny random SpiritLM with 6 layers and interleaved data over it."""
    import slm_transformerlens as slt
    from slm_transformerlens.testing import make_spiritlm_checkpoint

    path = make_spiritlm_checkpoint(tmp_path_factory.mktemp("six"), n_layers=6)
    model = slt.load(path, progress=False)
    return model, _interleaved_data(model)


def _hand_logits(model, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """[pos, vocab] logit-lens logits at resid_post of ``layer`` from Hugging Face's hidden states, by hand."""
    hf = model.original_model
    with torch.no_grad():
        hidden = hf(tokens, output_hidden_states=True).hidden_states[layer + 1][0]
        return hf.lm_head(hf.model.norm(hidden)).float()


def test_any_position_shuffled_control_equals_a_hand_written_reread(spiritlm_model):
    model = spiritlm_model
    data = _speech_data(model)
    layers, ks, seed, n_perm = [0, 1], (1, 5, 10), 3, 4
    table = transcription_table(model, data, positions="any", layers=layers, views=["text"], progress=False)
    got = shuffled_control(table, ks=ks, n_permutations=n_perm, seed=seed).set_index(["layer", "metric", "k"])
    text = model.speech_vocab.group_mask("text")
    resolver = WordTargetResolver(model.tokenizer)
    words = [(u, span) for u, batch in enumerate(data) for span in batch.word_spans.itertuples(index=False)]
    targets = [set(resolver(span.word).ids) for _, span in words]
    total_hits = 0
    for layer in layers:
        tops = {}  # per utterance: [pos, 10] top ids of the text view
        for u, batch in enumerate(data):
            logits = _hand_logits(model, batch.tokens, layer).masked_fill(~text, float("-inf"))
            tops[u] = logits.topk(10, dim=-1).indices
        for k in ks:
            rates = []
            for j in range(n_perm):
                partners = shuffled_partners([span.word for _, span in words], seed=seed + j)
                hits = []
                for i, (u, span) in enumerate(words):
                    if not targets[i] & set(torch.nonzero(text).flatten().tolist()):
                        continue
                    seen = {int(t) for p in range(span.start, span.stop) for t in tops[u][p, :k]}
                    hits.append(bool(targets[partners[i]] & seen))
                rates.append(np.mean(hits))
                total_hits += sum(hits)
            assert got.loc[(layer, "transcription", k), "shuffled_rate"] == pytest.approx(
                np.mean(rates), abs=1e-12
            )
            assert got.loc[(layer, "transcription", k), "shuffled_sd"] == pytest.approx(
                np.std(rates, ddof=1), abs=1e-12
            )
    assert total_hits > 0  # the comparison is not between two zeros
    assert (got["n_permutations"] == n_perm).all()


def test_swapped_audio_control_equals_a_hand_built_second_run(spiritlm_model):
    model = spiritlm_model
    data = _speech_data(model, n_utterances=8, seed=1)
    swapped = swap_audio(model, data, seed=5)
    donors = swapped.donors
    assert len(donors) == 8 * 5
    # donors: another type, another utterance, the closest unit count available
    assert (donors["donor_word"].str.lower() != donors["word"].str.lower()).all()
    assert (donors["donor_utterance"] != donors["utterance"]).all()
    assert swap_audio(model, data, seed=5).donors.equals(donors)  # deterministic for a seed
    units = {
        (u, s.word_index): batch.tokens[0, s.start : s.stop].tolist()
        for u, batch in enumerate(data)
        for s in batch.word_spans.itertuples(index=False)
    }
    table = swapped_audio_table(
        model, data, seed=5, positions="last", layers=[0, 1], views=["text"], progress=False
    )
    text = model.speech_vocab.group_mask("text")
    resolver = WordTargetResolver(model.tokenizer)
    by_word = donors.set_index(["utterance", "word_index"])
    for u, batch in enumerate(data):
        ids, last = [1, model.speech_vocab.markers["speech"]], {}
        for s in batch.word_spans.itertuples(index=False):  # build the swapped tokens by hand
            donor = by_word.loc[(u, s.word_index)]
            ids += units[(int(donor["donor_utterance"]), int(donor["donor_word_index"]))]
            last[s.word_index] = len(ids) - 1
        for layer in (0, 1):
            logits = _hand_logits(model, torch.tensor([ids]), layer)
            rows = table[(table["utterance"] == u) & (table["layer"] == layer)]
            for row in rows.itertuples(index=False):
                assert row.position == last[row.word_index]
                target = [t for t in resolver(row.word).ids if text[t]]  # the ORIGINAL word's target
                best = logits[row.position, target].max()
                expected = int((logits[row.position][text] > best).sum())
                assert row.rank == expected
    # a SwappedDataset is read as it is (one swap for several read-outs), never swapped a second time
    reused = swapped_audio_table(
        model, swapped, positions="last", layers=[0, 1], views=["text"], progress=False
    )
    pd.testing.assert_frame_equal(reused, table)


def test_swap_audio_shifts_later_spans_and_refuses_without_a_donor(spiritlm_model):
    model = spiritlm_model
    vocab = model.speech_vocab
    u = vocab.unit_token_ids(torch.arange(6)).tolist()
    first = EncodedBatch(
        torch.tensor([[1, vocab.markers["speech"], *u[:3], vocab.markers["text"], 300]]),
        None,
        pd.DataFrame([(0, 0, "red", "speech", 2, 5), (0, 1, "hood", "text", 6, 7)], columns=SPAN_COLUMNS),
    )
    second = EncodedBatch(
        torch.tensor([[1, vocab.markers["speech"], u[3]]]),
        None,
        pd.DataFrame([(0, 0, "wolf", "speech", 2, 3)], columns=SPAN_COLUMNS),
    )
    out = swap_audio(model, [first, second])
    assert out[0].tokens.tolist() == [[1, vocab.markers["speech"], u[3], vocab.markers["text"], 300]]
    assert out[0].word_spans[["word", "start", "stop"]].values.tolist() == [["red", 2, 3], ["hood", 4, 5]]
    assert out[1].tokens.tolist() == [[1, vocab.markers["speech"], *u[:3]]]
    with pytest.raises(LensError, match="no donor for the spoken word 'red'"):
        swap_audio(model, [first])


def test_empty_table_keeps_its_columns_and_summary_says_why(spiritlm_model):
    data = _speech_data(spiritlm_model, n_utterances=2)
    full = transcription_table(spiritlm_model, data, layers=[0], progress=False)
    empty = transcription_table(spiritlm_model, data, layers=[0], modalities=("text",), progress=False)
    assert empty.empty and list(empty.columns) == list(full.columns)
    with pytest.raises(LensError, match="the table has no rows"):
        summarize_transcription(empty)


def _classify(model, data, plant, positions):
    kwargs = dict(positions=positions, views=["text"], progress=False, batch_tokens=4096)
    with plant:
        table = transcription_table(model, data, **kwargs)
        swapped = swapped_audio_table(model, data, **kwargs)
    summary = summarize_transcription(table, swapped=swapped, n_boot=200, ks=(1, 10), n_permutations=3)
    return (
        table,
        swapped,
        summary[(summary["metric"] == "transcription") & (summary["k"] == 10)].set_index("layer"),
    )


@pytest.mark.parametrize("positions", ["any"])  # "last": tests/test_planted_cli.py (the CLI's default)
def test_planted_hearer_is_heard_at_its_layers_only(six_layers, positions):
    model, data = six_layers
    plant = plant_hearer(model, hearer_lookup(model, data), layers=range(PLANTED[0], PLANTED[1] + 1))
    table, swapped, rows = _classify(model, data, plant, positions)
    for layer in range(6):
        if layer in PLANTED:
            assert rows.loc[layer, "rate"] == 1.0 and rows.loc[layer, "heard_low"] > 0.5
            assert rows.loc[layer, "heard_low_type"] > 0.5
        else:  # not planted: nothing heard
            assert rows.loc[layer, "heard_low"] <= 0 <= rows.loc[layer, "heard_high"]
            assert rows.loc[layer, "heard_low_type"] <= 0
    heard = heard_rates(table, swapped, ks=(10,), n_boot=300)
    peak = heard_peak(heard, k=10)
    assert int(peak["peak_layer"].iloc[0]) in PLANTED and bool(peak["clears"].iloc[0])
    assert heard_headline(heard, k=10).startswith("heard above context: +")


def test_planted_guesser_is_read_but_not_heard(six_layers):
    model, data = six_layers
    plant = plant_guesser(model, guesser_lookup(model, data), layers=range(PLANTED[0], PLANTED[1] + 1))
    table, swapped, rows = _classify(model, data, plant, "last")
    for layer in PLANTED:
        assert rows.loc[layer, "rate"] == 1.0 and rows.loc[layer, "swapped_rate"] == 1.0
    planted = rows.loc[list(PLANTED)]  # context explains the planted read-out
    assert ((planted["heard_low"] <= 0) & (planted["heard_high"] >= 0)).all()
    assert not ((rows["heard_low"] > 0) & (rows["heard_low_type"] > 0)).any()  # no layer clears
    assert "no layer clears" in heard_headline(heard_rates(table, swapped, ks=(10,), n_boot=300), k=10)


def test_plants_refuse_bad_settings(six_layers):
    model, data = six_layers
    with pytest.raises(PlantError, match=r"non-empty subset of 0\.\.5"):
        plant_hearer(model, hearer_lookup(model, data), layers=[6])
    with pytest.raises(PlantError, match="interleaved data"):
        plant_guesser(model, {}, layers=[1])
    # outside its `with` block a plant changes nothing
    plain = transcription_table(model, data[:3], layers=[2], views=["text"], progress=False)
    plant = plant_hearer(model, hearer_lookup(model, data), layers=[2])
    with plant:
        pass
    again = transcription_table(model, data[:3], layers=[2], views=["text"], progress=False)
    assert plain["rank"].equals(again["rank"])


def _synthetic(hits: np.ndarray, words: list[str]) -> pd.DataFrame:
    """A minimal table: 10 utterances x 4 words, one layer, ranks 0 (hit) or 50 (miss)."""
    n_utt, n_words = hits.shape
    return pd.DataFrame(
        {
            "utterance": np.repeat(np.arange(n_utt), n_words),
            "word_index": np.tile(np.arange(n_words), n_utt),
            "word": [words[(u + j) % len(words)] for u in range(n_utt) for j in range(n_words)],
            "layer": 0,
            "site": "resid_post",
            "view": "text",
            "rank": pd.array(np.where(hits.ravel(), 0, 50), dtype="Int64"),
            "next_rank": pd.array([None] * hits.size, dtype="Int64"),
        }
    )


def test_heard_interval_is_a_paired_cluster_bootstrap_by_hand():
    rng = np.random.default_rng(0)
    words = ["red", "hood", "wolf", "door", "girl"]
    real, swapped = rng.random((10, 4)) < 0.7, rng.random((10, 4)) < 0.3
    got = heard_rates(_synthetic(real, words), _synthetic(swapped, words), ks=(1,), n_boot=400, seed=2)
    row = got[got.metric == "transcription"].iloc[0]
    assert row["heard"] == pytest.approx(real.mean() - swapped.mean())
    # by hand: the same multinomial draw of utterances for both tables, per draw rate - swapped rate
    weights = np.random.default_rng(2).multinomial(10, np.full(10, 0.1), size=400)
    diffs = (weights @ real.sum(1)) / (weights @ np.full(10, 4)) - (weights @ swapped.sum(1)) / (
        weights @ np.full(10, 4)
    )
    assert (row["heard_low"], row["heard_high"]) == pytest.approx(tuple(np.quantile(diffs, [0.025, 0.975])))
    with pytest.raises(LensError, match="other words than the table"):
        heard_rates(_synthetic(real, words), _synthetic(swapped, words).iloc[:-1], ks=(1,))


def test_swap_audio_of_a_padded_batch_equals_its_rows_swapped_alone(spiritlm_model):
    from slm_transformerlens.lens import pad_batches

    data = _speech_data(spiritlm_model, n_utterances=4, seed=3)
    joined, _ = pad_batches(data[:2], 0)
    alone = swap_audio(spiritlm_model, data, seed=1)
    batched = swap_audio(spiritlm_model, [joined, *data[2:]], seed=1)
    assert batched.donors.equals(alone.donors)  # utterances numbered alike, donors alike
    for row in range(2):
        length = int(batched[0].attention_mask[row].sum())
        assert batched[0].tokens[row, :length].tolist() == alone[row].tokens[0].tolist()
        spans = batched[0].word_spans[batched[0].word_spans.utterance == row]
        assert (
            spans[["start", "stop"]].values.tolist()
            == alone[row].word_spans[["start", "stop"]].values.tolist()
        )
