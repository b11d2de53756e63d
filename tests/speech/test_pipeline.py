"""End to end on the committed real speech: tiny random 25 Hz HuBERT -> k-means -> units -> word spans."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from speech_helpers import FIXTURE_NAMES, FIXTURES, load_fixture, sims_tokenizer, sims_vocab

from slm_transformerlens.errors import SpeechInputError
from slm_transformerlens.speech import (
    HubertFeatureExtractor,
    KMeansQuantizer,
    SpeechTokenizer,
    encode_utterances,
    interleave,
    load_audio,
    load_quantizer,
)


@pytest.fixture(scope="module")
def extractor(hubert_dir: Path) -> HubertFeatureExtractor:
    return HubertFeatureExtractor(hubert_dir, layer=11)


@pytest.fixture(scope="module")
def features(extractor: HubertFeatureExtractor) -> dict[str, torch.Tensor]:
    return {name: extractor(load_audio(FIXTURES / f"{name}.wav")) for name in FIXTURE_NAMES}


@pytest.fixture(scope="module")
def quantizer_files(
    tmp_path_factory: pytest.TempPathFactory, features: dict[str, torch.Tensor]
) -> dict[str, Path]:
    data = torch.cat(list(features.values())).numpy()
    model = KMeans(n_clusters=50, n_init=1, random_state=0).fit(data)
    directory = tmp_path_factory.mktemp("km")
    joblib.dump(model, directory / "km50.bin")
    np.save(directory / "km50.npy", model.cluster_centers_)
    torch.save({"cluster_centers": model.cluster_centers_, "n_clusters": 50}, directory / "km50.pt")
    return {"joblib": directory / "km50.bin", "npy": directory / "km50.npy", "torch": directory / "km50.pt"}


def test_extractor_frame_grid(extractor: HubertFeatureExtractor, features: dict[str, torch.Tensor]) -> None:
    assert extractor.hop_length == 640 and extractor.frame_duration == pytest.approx(0.04)
    for name, feats in features.items():
        audio, _rate, _, _ = load_fixture(name)
        assert feats.shape == (len(audio) // 640, 16), name


def test_chunking_keeps_the_frame_grid(hubert_dir: Path, features: dict[str, torch.Tensor]) -> None:
    chunked = HubertFeatureExtractor(hubert_dir, layer=11, chunk_seconds=1.0)
    audio = load_audio(FIXTURES / "librivox_0890.wav")
    out = chunked(audio)
    assert out.shape == features["librivox_0890"].shape  # attention is per chunk, so values differ


def test_extractor_errors(hubert_dir: Path, extractor: HubertFeatureExtractor) -> None:
    with pytest.raises(SpeechInputError, match="layer 12"):
        HubertFeatureExtractor(hubert_dir, layer=12)
    with pytest.raises(SpeechInputError, match="empty"):
        extractor(torch.zeros(0))
    with pytest.raises(SpeechInputError, match="shorter"):
        extractor(torch.zeros(100))
    with pytest.raises(SpeechInputError, match="not a HubertModel"):
        HubertFeatureExtractor(hubert_dir / "missing")


def test_all_quantizer_formats_give_identical_units(
    extractor: HubertFeatureExtractor, quantizer_files: dict[str, Path], features: dict[str, torch.Tensor]
) -> None:
    quantizers = [
        load_quantizer(quantizer_files["joblib"], trust_pickle=True),
        KMeansQuantizer.from_npy(quantizer_files["npy"]),
        KMeansQuantizer.from_torch(quantizer_files["torch"]),
    ]
    sklearn_model = joblib.load(quantizer_files["joblib"])
    for name in FIXTURE_NAMES:
        expected = sklearn_model.predict(features[name].numpy())
        for quantizer in quantizers:
            np.testing.assert_array_equal(quantizer(features[name]).numpy(), expected)
    # the full tokenizer (audio -> Speech) on one file
    audio, rate, aligned, _ = load_fixture("librivox_0930")
    speech = SpeechTokenizer(extractor, quantizers[1])(audio, rate, words=aligned)
    frames = sklearn_model.predict(features["librivox_0930"].numpy())
    assert speech.n_frames == len(frames)
    assert np.repeat(speech.units, speech.durations).tolist() == frames.tolist()
    assert all(a != b for a, b in zip(speech.units, speech.units[1:], strict=False))


def test_real_speech_to_word_spans(
    extractor: HubertFeatureExtractor, quantizer_files: dict[str, Path]
) -> None:
    tokenizer = SpeechTokenizer(extractor, KMeansQuantizer.from_npy(quantizer_files["npy"]))
    vocab, text_tokenizer = sims_vocab("qwen2"), sims_tokenizer("qwen2")
    utterances = []
    for name in FIXTURE_NAMES:
        audio, rate, aligned, _ = load_fixture(name)
        speech = tokenizer(audio, rate, words=aligned)
        utterances.append(interleave(speech, "poisson", speech_fraction=0.5, mean_span=2, seed=1))
    batch = encode_utterances(utterances, vocab, text_tokenizer, on_empty_word="keep")
    spans = batch.word_spans
    assert set(spans["modality"]) == {"speech", "text"}
    assert spans.groupby("utterance").size().tolist() == [len(load_fixture(n)[2]) for n in FIXTURE_NAMES]
    spoken = spans[(spans.modality == "speech") & (spans.n_tokens > 0)]
    for row in spoken.itertuples():
        ids = batch.tokens[row.utterance, row.start : row.stop]
        assert all(vocab.unit_of(int(i)) is not None for i in ids)
        assert row.n_tokens == row.n_units


def test_resampling_needs_the_flag(
    extractor: HubertFeatureExtractor, quantizer_files: dict[str, Path]
) -> None:
    tokenizer = SpeechTokenizer(extractor, KMeansQuantizer.from_npy(quantizer_files["npy"]))
    audio, rate, aligned, _ = load_fixture("espeak_capital")
    from slm_transformerlens.speech import resample

    audio_22k = resample(torch.from_numpy(audio), 16000, 22050).numpy()
    with pytest.raises(SpeechInputError, match="22050 Hz"):
        tokenizer(audio_22k, 22050)
    speech = tokenizer(audio_22k, 22050, words=aligned, resample=True, keep_audio=True)
    assert speech.sample_rate == 16000 and abs(speech.n_frames - len(audio) // 640) <= 1
    with pytest.raises(SpeechInputError, match="outside the audio"):
        tokenizer(audio[: len(audio) // 2], rate, words=aligned)
    with pytest.raises(SpeechInputError, match="empty"):
        tokenizer(np.zeros(0, dtype=np.float32), rate)
