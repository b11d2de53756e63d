"""Spoken-knowledge scoring: equals a hand loop over Hugging Face log-probs, slamkit's tie rule, the readers."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from slm_transformerlens.knowledge import (
    FACTS,
    KnowledgeColumns,
    KnowledgeError,
    encode_continuation,
    items_from_facts,
    knowledge_accuracy,
    knowledge_table,
    pair_scores,
    read_knowledge,
    read_knowledge_json,
    read_knowledge_parquet,
)
from slm_transformerlens.speech.audio import write_wav
from slm_transformerlens.speech.inputs import Speech, Text

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/knowledge/facts_espeak.parquet"


def _hand_log_likelihood(
    model, tokens: torch.Tensor, mask: torch.Tensor, allowed: torch.Tensor | None
) -> float:
    """One unpadded sequence through the Hugging Face model, log-softmax, summed over the scored tokens."""
    with torch.no_grad():
        logits = model.original_model(tokens[None]).logits[0].float()
    total = 0.0
    for p in range(1, len(tokens)):
        if not mask[p]:
            continue
        row = logits[p - 1] if allowed is None else logits[p - 1].masked_fill(~allowed, float("-inf"))
        total += float(torch.log_softmax(row, -1)[tokens[p]])
    return total


def _unit_items(model, tmp_path: Path, n: int = 4) -> list:
    """Our JSON format with units for every part (no HuBERT needed)."""
    rng = np.random.default_rng(0)
    records = []
    for fact in FACTS[:n]:
        record = {"id": fact.fact_id, "category": fact.category}
        for part in ("prompt", "correct", "counterfactual"):
            text = getattr(fact, part)
            record[part] = text
            n_words = len(text.split())
            record[f"{part}_units"] = rng.integers(0, model.speech_vocab.n_units, 3 * n_words).tolist()
            record[f"{part}_words"] = [[w, 0.12 * i, 0.12 * (i + 1)] for i, w in enumerate(text.split())]
        records.append(record)
    path = tmp_path / "items.json"
    path.write_text(json.dumps(records))
    return read_knowledge_json(path)


@pytest.mark.parametrize("mode", ["text", "speech", "speech_text", "text_speech"])
def test_scorer_equals_hand_loop_over_hf_log_probs(spiritlm_model, tmp_path, mode):
    model = spiritlm_model
    items = _unit_items(model, tmp_path)
    table = knowledge_table(model, items, mode=mode, batch_size=3, progress=False)
    modality = "text" if mode in ("text", "speech_text") else "speech"
    allowed = model.speech_vocab.group_mask(modality)
    for item, row in zip(items, table.itertuples(index=False), strict=True):
        for part in ("correct", "counterfactual"):
            prompt = Text(item.prompt) if mode.startswith("text") else item.spoken["prompt"].speech
            cont = Text(item.text(part)) if modality == "text" else item.spoken[part].speech
            tokens, mask = encode_continuation(model, prompt, cont, token_modality=modality)
            expected = _hand_log_likelihood(model, tokens, mask, allowed)
            assert getattr(row, f"ll_{part}") == pytest.approx(expected, abs=1e-5)
            n = getattr(row, f"n_{part}")
            assert getattr(row, f"mean_ll_{part}") == pytest.approx(expected / n, abs=1e-6)
            # the scored tokens are exactly the continuation's own
            if modality == "speech":
                assert n == len(item.spoken[part].speech.units)
            else:
                ids = model.tokenizer(" " + item.text(part), add_special_tokens=False).input_ids
                assert tokens[mask].tolist() == ids
    assert 0.0 <= knowledge_accuracy(table) <= 1.0
    np.testing.assert_array_equal(
        table["score_mean"], pair_scores(table.mean_ll_correct, table.mean_ll_counterfactual)
    )


def test_all_tokens_over_the_whole_vocabulary(spiritlm_model):
    items = items_from_facts(FACTS[:2])
    table = knowledge_table(spiritlm_model, items, mode="text", token_modality="all", progress=False)
    for item, row in zip(items, table.itertuples(index=False), strict=True):
        tokens, mask = encode_continuation(
            spiritlm_model, Text(item.prompt), Text(item.correct), token_modality="all"
        )
        assert row.ll_correct == pytest.approx(
            _hand_log_likelihood(spiritlm_model, tokens, mask, None), abs=1e-5
        )
    seq = knowledge_table(spiritlm_model, items, mode="text", score_tokens="sequence", progress=False)
    assert (seq["n_correct"] > table["n_correct"]).all()  # the prompt's tokens count too


def test_slamkit_tie_rule(spiritlm_model):
    np.testing.assert_array_equal(pair_scores([1.0, -2.0, -3.0], [0.0, -2.0, -1.0]), [1.0, 0.5, 0.0])
    same = items_from_facts(FACTS[:1])[0]
    tie = type(same)("tie", same.prompt, same.correct, same.correct)
    with pytest.warns(UserWarning, match="1 of 2 knowledge items have a counterfactual identical"):
        table = knowledge_table(spiritlm_model, [tie, same], mode="text", progress=False)
    assert table.loc[0, "score_mean"] == table.loc[0, "score_sum"] == 0.5
    assert knowledge_accuracy(table.iloc[:1]) == 0.5
    # only identical pairs: refused, not an accuracy of 0.5 that reads as chance (issue 18)
    with pytest.raises(KnowledgeError, match="every item's counterfactual is identical"):
        knowledge_table(spiritlm_model, [tie], mode="text", progress=False)


def test_speech_mode_without_units_or_tokenizer_is_a_clear_error(spiritlm_model):
    with pytest.raises(KnowledgeError, match="no audio or units"):
        knowledge_table(spiritlm_model, items_from_facts(FACTS[:1]), mode="speech", progress=False)
    items = read_knowledge_parquet(FIXTURE)[:1]
    with pytest.raises(KnowledgeError, match="speech tokenizer"):
        knowledge_table(spiritlm_model, items, mode="speech", progress=False)
    with pytest.raises(KnowledgeError, match="unknown knowledge mode"):
        knowledge_table(spiritlm_model, items, mode="video", progress=False)


def test_reads_the_committed_espeak_fixture():
    assert FIXTURE.stat().st_size < 2_000_000
    items = read_knowledge(FIXTURE)
    assert len(items) == 24 and len({i.category for i in items}) == 8
    for item in items:
        for part in ("prompt", "correct", "counterfactual"):
            spoken = item.spoken[part]
            assert spoken.sample_rate == 16_000 and spoken.audio.dtype == np.float32
            assert [w.word for w in spoken.words] == item.text(part).split()
            assert spoken.words[-1].end <= len(spoken.audio) / 16_000 + 1e-3
    schema = pq.read_schema(FIXTURE)
    features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert features["prompt_audio"]["_type"] == "Audio"
    assert schema.field("prompt_audio").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def test_reads_a_pyarrow_parquet_in_the_datasets_audio_schema_with_other_column_names(tmp_path):
    def wav(seconds: float) -> bytes:
        buffer = io.BytesIO()
        write_wav(buffer, 0.1 * np.sin(np.linspace(0, 100, int(16_000 * seconds))), 16_000)
        return buffer.getvalue()

    audio = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    timing = pa.struct([("text", pa.string()), ("s", pa.float64()), ("e", pa.float64())])
    table = pa.table(
        {
            "question": ["the sky is", "bees make"],
            "answer": ["blue", "honey"],
            "wrong": ["green", "cheese"],
            "question_audio": pa.array(
                [{"bytes": wav(0.6), "path": "a.wav"}, {"bytes": wav(0.5), "path": None}], audio
            ),
            "question_timing": pa.array(
                [
                    [
                        {"text": "the", "s": 0.0, "e": 0.1},
                        {"text": "sky", "s": 0.1, "e": 0.3},
                        {"text": "is", "s": 0.3, "e": 0.5},
                    ],
                    [{"text": "bees", "s": 0.0, "e": 0.2}, {"text": "make", "s": 0.2, "e": 0.4}],
                ],
                pa.list_(timing),
            ),
        }
    )
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "test-00000-of-00001.parquet")
    columns = KnowledgeColumns.from_mapping(
        {
            "item_id": None,
            "category": None,
            "prompt_text": "question",
            "correct_text": "answer",
            "counterfactual_text": "wrong",
            "prompt_audio": "question_audio",
            "prompt_words": "question_timing",
            "word_fields": ["text", "s", "e"],
        }
    )
    items = read_knowledge(tmp_path, columns)  # a folder: every parquet below it
    assert [i.prompt for i in items] == ["the sky is", "bees make"]
    assert items[1].correct == "honey" and items[1].counterfactual == "cheese"
    assert len(items[0].spoken["prompt"].audio) == int(16_000 * 0.6)
    assert [w.word for w in items[0].spoken["prompt"].words] == ["the", "sky", "is"]
    assert "correct" not in items[0].spoken
    with pytest.raises(Exception, match="no columns"):
        read_knowledge_parquet(tmp_path, KnowledgeColumns())
    with pytest.raises(Exception, match="unknown knowledge column"):
        KnowledgeColumns.from_mapping({"prompt": "x"})


def test_speech_prompt_from_units_scores_units_of_the_completion(spiritlm_model, tmp_path):
    items = _unit_items(spiritlm_model, tmp_path, n=2)
    speech = items[0].spoken["correct"].speech
    assert isinstance(speech, Speech)
    table = knowledge_table(spiritlm_model, items, mode="speech", progress=False)
    assert table["n_correct"].tolist() == [len(i.spoken["correct"].speech.units) for i in items]


def test_spoken_parts_from_the_fixture_audio_through_a_speech_tokenizer(spiritlm_model):
    """Parquet audio + word timings -> HuBERT (tiny, random) + k-means -> units -> scored as speech."""
    from transformers import HubertModel

    from slm_transformerlens.speech.features import HubertFeatureExtractor
    from slm_transformerlens.speech.quantizers import KMeansQuantizer
    from slm_transformerlens.speech.tokenizer import SpeechTokenizer
    from slm_transformerlens.testing import tiny_hubert_config

    torch.manual_seed(0)
    tokenizer = SpeechTokenizer(
        HubertFeatureExtractor(HubertModel(tiny_hubert_config()).eval(), layer=11),
        KMeansQuantizer(torch.randn(50, 16)),
    )
    items = read_knowledge(FIXTURE)[:3]
    table = knowledge_table(spiritlm_model, items, mode="speech", speech_tokenizer=tokenizer, progress=False)
    for item, row in zip(items, table.itertuples(index=False), strict=True):
        spoken = item.spoken["correct"]
        speech = tokenizer(spoken.audio, spoken.sample_rate, words=spoken.words, resample=True)
        assert row.n_correct == len(speech.units)
    mixed = knowledge_table(
        spiritlm_model, items, mode="speech_text", speech_tokenizer=tokenizer, progress=False
    )
    assert mixed["n_correct"].tolist() == [
        len(spiritlm_model.tokenizer(" " + i.correct, add_special_tokens=False).input_ids) for i in items
    ]


def test_non_finite_logits_are_an_error_not_a_score(spiritlm_model):
    from slm_transformerlens.errors import NonFiniteError
    from slm_transformerlens.knowledge import sequence_log_likelihoods

    class Overflowing:  # the model's logits with one position overflowed (as an fp16 model can)
        cfg = spiritlm_model.cfg
        tokenizer = spiritlm_model.tokenizer

        def __call__(self, tokens, **kwargs):
            logits = spiritlm_model(tokens, **kwargs).clone()
            logits[1, 2, 5] = float("inf")
            return logits

    sequences = [torch.tensor([1, 5, 6, 7, 8]), torch.tensor([1, 9, 10, 11])]
    scored = [torch.ones(5, dtype=torch.bool), torch.ones(4, dtype=torch.bool)]
    sums, _ = sequence_log_likelihoods(spiritlm_model, sequences, scored)
    assert torch.isfinite(sums).all()
    with pytest.raises(NonFiniteError, match=r"knowledge logits at sequence 0 position 2"):
        sequence_log_likelihoods(Overflowing(), sequences, scored)
