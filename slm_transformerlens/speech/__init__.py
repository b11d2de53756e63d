"""Speech inputs: audio -> units -> interleaved speech / text token sequences with word spans.

Typical use::

    from slm_transformerlens.speech import Speech, Text, encode_utterances, interleave
    speech = Speech(units=[12, 7, 7, 3], durations=[2, 1, 3, 1], words=[("once", 0.0, 0.12), ...])
    batch = encode_utterances([interleave(speech, "poisson", seed=0)], model.speech_vocab, tokenizer)
    batch.tokens, batch.word_spans
"""

from slm_transformerlens.checkpoints.spiritlm import normalize_spiritlm_text
from slm_transformerlens.spans import WORD_SPAN_COLUMNS, EncodedBatch, WordSpans
from slm_transformerlens.speech.alignment import (
    WordTiming,
    as_word_timings,
    read_alignment,
    read_slamkit_json,
    read_textgrid,
    validate_words,
    write_slamkit_json,
)
from slm_transformerlens.speech.audio import (
    TARGET_SAMPLE_RATE,
    load_audio,
    prepare_audio,
    read_wav,
    resample,
    to_mono,
    write_wav,
)
from slm_transformerlens.speech.features import HubertFeatureExtractor
from slm_transformerlens.speech.inputs import EmptyWordPolicy, Speech, Text, TimedToken, timed_tokens
from slm_transformerlens.speech.interleave import encode_utterances, family_string, is_speech_input
from slm_transformerlens.speech.plans import interleave, plan_mask, poisson_span_mask
from slm_transformerlens.speech.quantizers import (
    KMeansQuantizer,
    LinearCTCQuantizer,
    Quantizer,
    load_quantizer,
)
from slm_transformerlens.speech.tokenizer import SpeechTokenizer
from slm_transformerlens.speech.units import (
    FRAME_DURATION_25HZ,
    dedup_units,
    unit_end_times,
    word_unit_ranges,
)

__all__ = [
    "FRAME_DURATION_25HZ",
    "TARGET_SAMPLE_RATE",
    "WORD_SPAN_COLUMNS",
    "EmptyWordPolicy",
    "EncodedBatch",
    "HubertFeatureExtractor",
    "KMeansQuantizer",
    "LinearCTCQuantizer",
    "Quantizer",
    "Speech",
    "SpeechTokenizer",
    "Text",
    "TimedToken",
    "WordSpans",
    "WordTiming",
    "as_word_timings",
    "dedup_units",
    "encode_utterances",
    "family_string",
    "interleave",
    "is_speech_input",
    "load_audio",
    "load_quantizer",
    "normalize_spiritlm_text",
    "plan_mask",
    "poisson_span_mask",
    "prepare_audio",
    "read_alignment",
    "read_slamkit_json",
    "read_textgrid",
    "read_wav",
    "resample",
    "timed_tokens",
    "to_mono",
    "unit_end_times",
    "validate_words",
    "word_unit_ranges",
    "write_slamkit_json",
    "write_wav",
]
