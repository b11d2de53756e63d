"""Audio preparation policy and the quantizer formats (k-means npy / torch / joblib, SpiritLM linear CTC)."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from slm_transformerlens.errors import SpeechInputError
from slm_transformerlens.speech import (
    KMeansQuantizer,
    LinearCTCQuantizer,
    load_quantizer,
    prepare_audio,
    read_wav,
    to_mono,
    write_wav,
)


def test_wav_roundtrip_and_stereo_downmix(tmp_path: Path) -> None:
    t = np.arange(1600) / 16000
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 220 * t)
    write_wav(tmp_path / "s.wav", np.stack([left, right]), 16000)
    audio, rate = read_wav(tmp_path / "s.wav")
    assert rate == 16000 and audio.shape == (2, 1600)
    np.testing.assert_allclose(audio[0], left, atol=1e-4)
    mono = prepare_audio(audio, rate)
    np.testing.assert_allclose(mono.numpy(), (left + right) / 2, atol=1e-4)
    assert to_mono(torch.ones(1, 5)).shape == (5,)
    with pytest.raises(SpeechInputError, match="shape"):
        to_mono(np.zeros((1, 2, 3)))


def test_sample_rate_policy() -> None:
    t = np.arange(22050) / 22050
    tone = np.sin(2 * np.pi * 300 * t).astype(np.float32)
    with pytest.raises(SpeechInputError, match=r"22050 Hz.*resample=True"):
        prepare_audio(tone, 22050)
    out = prepare_audio(tone, 22050, resample=True)
    assert out.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(out.numpy()))
    assert abs(int(spectrum.argmax()) - 300) <= 1  # 1 s of audio: bin = Hz


def test_empty_and_nonfinite_audio() -> None:
    with pytest.raises(SpeechInputError, match="empty"):
        prepare_audio(np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(SpeechInputError, match="NaN"):
        prepare_audio(np.array([0.0, np.nan], dtype=np.float32), 16000)


@pytest.fixture(scope="module")
def kmeans() -> tuple[KMeans, np.ndarray]:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(400, 8)).astype(np.float32)
    return KMeans(n_clusters=12, n_init=2, random_state=0).fit(data), rng.normal(size=(300, 8)).astype(
        np.float32
    )


def test_kmeans_formats_give_identical_units(tmp_path: Path, kmeans: tuple[KMeans, np.ndarray]) -> None:
    model, features = kmeans
    joblib.dump(model, tmp_path / "km.bin")
    np.save(tmp_path / "km.npy", model.cluster_centers_)
    torch.save(
        {"cluster_centers": torch.from_numpy(model.cluster_centers_), "n_clusters": 12}, tmp_path / "km_t.pt"
    )
    torch.save(
        {"cluster_centers": model.cluster_centers_, "n_clusters": 12}, tmp_path / "km_np.pt"
    )  # SpiritLM style
    quantizers = [
        KMeansQuantizer.from_joblib(tmp_path / "km.bin", trust_pickle=True),
        KMeansQuantizer.from_npy(tmp_path / "km.npy"),
        KMeansQuantizer.from_torch(tmp_path / "km_t.pt"),
        KMeansQuantizer.from_torch(tmp_path / "km_np.pt"),
        load_quantizer(tmp_path / "km.npy"),
        load_quantizer(tmp_path / "km_np.pt"),
        load_quantizer(tmp_path / "km.bin", trust_pickle=True),
    ]
    expected = model.predict(features)
    for quantizer in quantizers:
        assert isinstance(quantizer, KMeansQuantizer) and quantizer.n_units == 12
        np.testing.assert_array_equal(quantizer(torch.from_numpy(features)).numpy(), expected)


def test_joblib_needs_explicit_trust(tmp_path: Path, kmeans: tuple[KMeans, np.ndarray]) -> None:
    joblib.dump(kmeans[0], tmp_path / "km.bin")
    with pytest.raises(SpeechInputError, match=r"arbitrary code.*trust_pickle=True"):
        KMeansQuantizer.from_joblib(tmp_path / "km.bin")
    with pytest.raises(SpeechInputError, match="trust_pickle"):
        load_quantizer(tmp_path / "km.bin")


def test_kmeans_bad_files(tmp_path: Path) -> None:
    torch.save({"cluster_centers": torch.zeros(3, 4), "n_clusters": 5}, tmp_path / "bad.pt")
    with pytest.raises(SpeechInputError, match="n_clusters"):
        KMeansQuantizer.from_torch(tmp_path / "bad.pt")
    with pytest.raises(SpeechInputError, match="dimension"):
        KMeansQuantizer(torch.zeros(3, 4))(torch.zeros(2, 5))


def _spiritlm_reference(quantizer: LinearCTCQuantizer, x: torch.Tensor) -> torch.Tensor:
    """SpiritLM's LinearQuantizerModel.forward, verbatim in behaviour."""
    logits = torch.nn.functional.log_softmax(quantizer.encoder(x), dim=-1)
    code = logits.argmax(dim=-1)
    counter = 0
    while (code == quantizer.vocab_size).any():
        counter += 1
        code[code == quantizer.vocab_size] = torch.roll(code, 1)[code == quantizer.vocab_size]
        if counter == 10000:
            break
    return code


def test_linear_ctc_quantizer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = {"vocab_size": 20, "dim": 16, "upstream_dim": 37}
    quantizer = LinearCTCQuantizer(cfg)
    x = torch.randn(200, 16)
    with torch.no_grad():  # make the blank win about half the frames so that filling is exercised
        logits = quantizer.encoder(x)
        quantizer.encoder[4].bias[20] += (logits[:, :20].max(-1).values - logits[:, 20]).median() + 1e-4
    quantizer.save_checkpoint(tmp_path / "L11_quantizer_20.pt")
    loaded = load_quantizer(tmp_path / "L11_quantizer_20.pt")
    assert isinstance(loaded, LinearCTCQuantizer) and loaded.n_units == 20
    raw = quantizer.encoder(x).argmax(-1)
    assert (raw == 20).any()
    units = loaded(x)
    assert (units < 20).all()
    torch.testing.assert_close(units, _spiritlm_reference(quantizer, x))
    state = torch.load(tmp_path / "L11_quantizer_20.pt", weights_only=True)
    assert set(state) == {"model_cfg", "model_weight"} and "0.weight" in state["model_weight"]


def test_linear_quantizer_all_blank() -> None:
    quantizer = LinearCTCQuantizer({"vocab_size": 4, "dim": 6, "upstream_dim": 8})
    with torch.no_grad():
        quantizer.encoder[4].bias[4] += 1e4
    with pytest.raises(SpeechInputError, match="blank"):
        quantizer(torch.randn(5, 6))
