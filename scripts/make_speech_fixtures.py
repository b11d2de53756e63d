"""Regenerate the real-speech test fixtures under tests/fixtures/speech/.

Two sources, both offline:

- espeak-ng (PyPI ``espeakng-loader``, which bundles libespeak-ng and its data), called through its C API
  with ctypes: word events carry the exact sample where each word starts; a word ends where the next
  word, a pause or the sentence end starts. 22050 Hz output resampled to 16 kHz.
- LibriVox utterances (public domain) from Debian's ``pocketsphinx-testdata``
  (``apt-get install pocketsphinx-testdata``), aligned with the PyPI ``pocketsphinx`` aligner.

Each fixture is ``NAME.wav`` (16 kHz mono 16-bit PCM) + ``NAME.json`` (slamkit alignment format:
``{"audio": ..., "text": ..., "source": ..., "aligned_text": [[word, start_s, end_s], ...]}``).

Usage: ``python scripts/make_speech_fixtures.py [--out tests/fixtures/speech]``. CI does not run this;
the outputs are committed.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import re
from pathlib import Path

import numpy as np

from slm_transformerlens.speech.audio import read_wav, resample, write_wav

ESPEAK_SENTENCES = {
    "espeak_once_upon": "Once upon a time, a little girl lived near the forest.",
    "espeak_capital": "The capital of France is Paris.",
    "espeak_quick_fox": "The quick brown fox jumps over the lazy dog.",
}
LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")
LIBRIVOX_IDS = (
    "sense_and_sensibility_01_austen_64kb-0880",
    "sense_and_sensibility_01_austen_64kb-0930",
    "sense_and_sensibility_01_austen_64kb-0890",
)
TARGET_RATE = 16_000

# espeak-ng C API constants
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS, INITIALIZE_PHONEME_IPA, INITIALIZE_DONT_EXIT = 0x1, 0x2, 0x8000
EVENT_WORD, EVENT_END, EVENT_MSG_TERMINATED, EVENT_PHONEME = 1, 5, 6, 7
POS_CHARACTER = 1


from slm_transformerlens.organism.espeak import SYNTH_CALLBACK as _CALLBACK  # noqa: E402


def espeak_synthesize(
    text: str, voice: str = "en-us"
) -> tuple[np.ndarray, int, list[tuple[str, float, float]]]:
    """Synthesize ``text``; return (float audio, rate, [(word, start_s, end_s)]) with exact word times."""
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    options = INITIALIZE_PHONEME_EVENTS | INITIALIZE_PHONEME_IPA | INITIALIZE_DONT_EXIT
    rate = lib.espeak_Initialize(
        AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), options
    )
    samples: list[int] = []
    events: list[tuple[int, int, int, int, bytes]] = []

    def callback(wav, n, event_array):  # type: ignore[no-untyped-def]
        if wav and n > 0:
            samples.extend(wav[:n])
        i = 0
        while event_array[i].type != 0:
            e = event_array[i]
            events.append(
                (
                    e.type,
                    e.text_position,
                    e.length,
                    e.sample,
                    bytes(e.id.string) if e.type == EVENT_PHONEME else b"x",
                )
            )
            i += 1
        return 0

    keep_alive = _CALLBACK(callback)
    lib.espeak_SetSynthCallback(keep_alive)
    lib.espeak_SetVoiceByName(voice.encode())
    data = text.encode("utf-8")
    lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, 0, None, None)
    lib.espeak_Synchronize()
    audio = np.asarray(samples, dtype=np.float32) / 32768.0
    words = []
    for index, (kind, position, length, sample, _) in enumerate(events):
        if kind != EVENT_WORD:
            continue
        word = data[position - 1 : position - 1 + length].decode("utf-8")
        end = len(samples)
        for later_kind, _, _, later_sample, name in events[index + 1 :]:
            is_pause = later_kind == EVENT_PHONEME and name.strip(b"\x00") == b""
            if (
                later_kind in (EVENT_WORD, EVENT_END, EVENT_MSG_TERMINATED) or is_pause
            ) and later_sample > sample:
                end = later_sample
                break
        words.append((word, sample / rate, end / rate))
    return audio, rate, words


def pocketsphinx_align(audio: np.ndarray, text: str) -> list[tuple[str, float, float]]:
    """Force-align 16 kHz audio to ``text`` with pocketsphinx; words with 10 ms precision, silences dropped."""
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=TARGET_RATE, loglevel="FATAL")
    decoder.set_align_text(text)
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2").tobytes()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    words = []
    for segment in decoder.seg():
        word = re.sub(r"\(\d+\)$", "", segment.word)
        if word in ("<sil>", "<s>", "</s>", "[NOISE]"):
            continue
        words.append((word, segment.start_frame / 100.0, (segment.end_frame + 1) / 100.0))
    return words


def _write(
    out: Path, name: str, audio: np.ndarray, words: list[tuple[str, float, float]], text: str, source: str
) -> None:
    write_wav(out / f"{name}.wav", audio, TARGET_RATE)
    payload = {
        "audio": f"{name}.wav",
        "text": text,
        "source": source,
        "aligned_text": [[w, round(s, 5), round(e, 5)] for w, s, e in words],
    }
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"{name}: {len(audio) / TARGET_RATE:.2f} s, {len(words)} words")


def main() -> None:
    """Write every fixture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/fixtures/speech"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    for name, sentence in ESPEAK_SENTENCES.items():
        audio, rate, words = espeak_synthesize(sentence)
        if len(words) != len(sentence.split()):  # espeak sometimes joins words (e.g. "there was")
            raise SystemExit(
                f"espeak gave {len(words)} word events for {len(sentence.split())} words: {sentence!r}"
            )
        audio16 = resample(torch.from_numpy(audio), rate, TARGET_RATE).numpy()
        _write(
            args.out, name, audio16, words, sentence, "espeak-ng en-us (espeakng-loader), exact word events"
        )
    transcripts = {}
    for line in (LIBRIVOX_DIR / "transcription").read_text().splitlines():
        match = re.match(r"<s> (.*) </s> \((.*)\)", line.strip())
        if match:
            transcripts[match.group(2)] = match.group(1)
    for utterance_id in LIBRIVOX_IDS:
        audio, rate = read_wav(LIBRIVOX_DIR / f"{utterance_id}.wav")
        if rate != TARGET_RATE or audio.ndim != 1:
            raise SystemExit(f"{utterance_id}: expected 16 kHz mono, got {rate} Hz shape {audio.shape}")
        text = transcripts[utterance_id]
        words = pocketsphinx_align(audio, text)
        name = "librivox_" + utterance_id.rsplit("-", 1)[1]
        _write(
            args.out,
            name,
            audio,
            words,
            text,
            f"LibriVox (public domain) {utterance_id}, pocketsphinx 5 alignment",
        )


if __name__ == "__main__":
    main()
