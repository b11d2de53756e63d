"""readout_precision="fast": the fp32 read-out's ranks, top-k and probabilities from exact split products.

The adversarial case: logits 1e-4 apart (far above float32 rounding, far below bfloat16's), at the top of
the distribution (top-k order) and in its dense middle (ranks). A single bf16 product scrambles them; the
split products must give exactly the fp32 read-out's ranks and top-k ids, probabilities within 1e-6.
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

import slm_transformerlens as slt
from slm_transformerlens.errors import NonFiniteError
from slm_transformerlens.lens import LensError, LogitLens, lens_table, read_vectors, transcription_table
from slm_transformerlens.lens import base as base_module
from slm_transformerlens.lens import readout as readout_module
from slm_transformerlens.lens.precision import default_readout_precision, split_pieces, split_unembedding
from slm_transformerlens.lens.readout import vocab_views

EPS = 1e-4  # spacing of the near-tied logits


@pytest.fixture(scope="module")
def own_model(spiritlm_checkpoint):
    """A private float32 copy of the tiny model (its unembedding is rewritten by the tests)."""
    return slt.load(spiritlm_checkpoint, progress=False)


@pytest.fixture(scope="module")
def bf16_model(spiritlm_checkpoint):
    return slt.load(spiritlm_checkpoint, progress=False, dtype="bfloat16")


def set_unembedding(model, weight: torch.Tensor) -> None:
    with torch.no_grad():
        model.W_U.copy_(weight.T)
    assert torch.equal(model.W_U.T, weight)


def near_tie_problem(model, n_rows: int = 12, seed: int = 0):
    """A bf16-exact unembedding and vectors whose logits hold near-ties at the top and in the middle."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.speech_vocab
    d, v = model.cfg.d_model, vocab.vocab_size
    weight = (torch.randn(v, d, generator=g) / 8).bfloat16().float()
    pick = vocab.text_token_ids[torch.randperm(len(vocab.text_token_ids), generator=g)[:10]]
    weight[pick] *= 16  # long rows: the near-tied logits stand out while the others stay small
    a = weight[pick].double()
    rows, targets, top_clusters = [], [], []
    for _ in range(n_rows):
        order = torch.cat([torch.randperm(6, generator=g), 6 + torch.randperm(4, generator=g)])
        top, mid = pick[order[:6]], pick[order[6:]]
        desired = torch.empty(10, dtype=torch.float64)
        desired[order] = torch.cat([5.0 + EPS * torch.arange(6.0), EPS * torch.arange(4.0)]).double()
        h0 = torch.randn(d, generator=g, dtype=torch.float64) * 0.1
        h = h0 + a.T @ torch.linalg.solve(a @ a.T, desired - a @ h0)
        others = weight.double() @ h
        others[pick] = float("-inf")
        assert others.max() < 4.0
        rows.append(h.float())
        targets.append([int(mid[1]), -1])
        top_clusters.append(top.flip(0))
    return weight, torch.stack(rows), torch.tensor(targets), torch.stack(top_clusters)


def read(model, lens, h, targets, precision, chunk_size=5, views=("full", "text", "speech")):
    vocab = model.speech_vocab
    return read_vectors(
        lens,
        h,
        None,
        views=vocab_views(vocab, list(views)),
        group_labels=vocab.group_labels,
        n_groups=len(vocab.group_names),
        top_k=6,
        targets={"t": targets},
        chunk_size=chunk_size,
        readout_precision=precision,
    )


def assert_same_readout(a, b) -> None:
    for view in a:
        x, y = a[view], b[view]
        assert torch.equal(x.top_ids, y.top_ids), view
        assert torch.equal(x.ranks["t"], y.ranks["t"]), view
        torch.testing.assert_close(x.top_probs, y.top_probs, atol=1e-6, rtol=0)
        torch.testing.assert_close(x.probs["t"], y.probs["t"], atol=1e-6, rtol=0, equal_nan=True)
        torch.testing.assert_close(x.masses, y.masses, atol=1e-6, rtol=0)
        torch.testing.assert_close(x.entropy, y.entropy, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
def test_fast_equals_fp32_on_near_ties(own_model, fmt, monkeypatch) -> None:
    """fp16 pieces hold every bf16 / fp16 unembedding; bf16 pieces are the other format (formats=...)."""
    monkeypatch.setattr(
        base_module, "split_unembedding", functools.partial(split_unembedding, formats=(fmt,))
    )
    weight, h, targets, top_clusters = near_tie_problem(own_model)
    set_unembedding(own_model, weight)
    lens = LogitLens(own_model)
    split = lens.split_unembedding()
    assert split is not None and split.dtype == getattr(torch, fmt)
    assert lens.resolved_readout_precision("fast") == "fast"
    fp32 = read(own_model, lens, h, targets, "fp32")
    fast = read(own_model, lens, h, targets, "fast")
    assert_same_readout(fp32, fast)
    # and both are the exact answer (float64), which a single bf16 product is not
    exact = h.double() @ weight.double().T
    t = targets[:, :1]
    exact_rank = (exact > exact.gather(1, t)).sum(-1)
    assert torch.equal(fast["full"].ranks["t"], exact_rank)
    assert torch.equal(fast["full"].top_ids, top_clusters)
    assert (exact_rank > 100).all()  # the ranks lie in the dense middle of the vocabulary
    bf16 = h.bfloat16().double() @ weight.double().T
    bf16_rank = (bf16 > bf16.gather(1, t)).sum(-1)
    bf16_top = bf16.topk(6).indices
    assert (bf16_rank != exact_rank).sum() + (bf16_top != top_clusters).any(-1).sum() >= len(h) // 2


def test_split_pieces_are_exact() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 300, generator=g) * torch.exp2(torch.randint(-60, 60, (50, 300), generator=g).float())
    pieces, rest = split_pieces(x, torch.bfloat16, 3)
    assert torch.equal(rest, torch.zeros_like(rest))
    assert torch.equal(sum(p.double() for p in pieces), x.double())
    y = torch.randn(50, 300, generator=g) * 1000
    pieces, rest = split_pieces(y, torch.float16, 2)
    assert torch.equal(sum(p.double() for p in pieces) + rest.double(), y.double())
    assert (rest.abs() <= y.abs() * 2.0**-22).all()


def test_split_logits_are_as_accurate_as_fp32() -> None:
    g = torch.Generator().manual_seed(2)
    weight = (torch.randn(3000, 256, generator=g) / 16).bfloat16()
    x = torch.randn(64, 256, generator=g) * 4
    exact = x.double() @ weight.double().T
    fp32_error = (x @ weight.float().T - exact).abs().max()
    for formats in (("float16",), ("bfloat16",)):
        split = split_unembedding(weight, None, formats=formats)
        assert split is not None and split.dtype == getattr(torch, formats[0])
        error = (split(x).double() - exact).abs().max()
        assert error <= 2 * fp32_error + 1e-7, (formats, error, fp32_error)


def test_float32_unembedding_falls_back_to_fp32(spiritlm_model, utterance) -> None:
    lens = LogitLens(spiritlm_model, readout_precision="fast")
    assert lens.split_unembedding() is None  # random float32 weights: no 16-bit format holds them
    assert lens.resolved_readout_precision() == "fp32"
    h = torch.randn(9, spiritlm_model.cfg.d_model)
    targets = torch.tensor([[5, -1]] * 9)
    a = read(spiritlm_model, lens, h, targets, "fast")
    b = read(spiritlm_model, lens, h, targets, "fp32")
    for view in a:
        assert torch.equal(a[view].entropy, b[view].entropy) and torch.equal(a[view].top_ids, b[view].top_ids)


def test_bad_precision_is_refused(spiritlm_model) -> None:
    with pytest.raises(LensError, match="readout_precision='bf16'"):
        LogitLens(spiritlm_model, readout_precision="bf16")
    lens = LogitLens(spiritlm_model)
    with pytest.raises(LensError, match="'fp32'"):
        lens.readout_precision = "tf32"
    lens.readout_precision = "auto"
    assert lens.readout_precision is None and lens.resolved_readout_precision() == "fp32"
    # fast is opt-in on every device until it has run end to end on a GPU
    assert default_readout_precision("cuda") == default_readout_precision("cpu") == "fp32"


def test_tables_agree_on_a_bf16_model(bf16_model, utterance) -> None:
    tokens, spans = utterance
    kwargs = dict(word_spans=spans, positions="every", targets={"t": [5, 7]}, token_strings=False)
    fp32 = lens_table(bf16_model, tokens, readout_precision="fp32", **kwargs)
    fast = lens_table(bf16_model, tokens, lens=LogitLens(bf16_model, readout_precision="fast"), **kwargs)
    assert fast["rank_t"].equals(fp32["rank_t"]) and fast["top_ids"].equals(fp32["top_ids"])
    assert (fast["prob_t"] - fp32["prob_t"]).abs().max() < 1e-6
    assert (fast["entropy"] - fp32["entropy"]).abs().max() < 1e-5
    data = [(tokens, spans), (tokens, spans)]
    a = transcription_table(bf16_model, data, modalities=None, progress=False, readout_precision="fast")
    b = transcription_table(bf16_model, data, modalities=None, progress=False, readout_precision="fp32")
    for column in ("rank", "next_rank", "top_ids"):
        assert a[column].equals(b[column]), column
    assert (a["prob"] - b["prob"]).abs().max() < 1e-6


@pytest.mark.parametrize("precision", ["fp32", "fast"])
def test_non_finite_logits_name_the_row_after_the_last_chunk(bf16_model, precision) -> None:
    lens = LogitLens(bf16_model)
    h = torch.randn(9, bf16_model.cfg.d_model)
    h[6, 3] = float("nan")
    with pytest.raises(NonFiniteError, match=r"at row 6 hold NaN"):
        read(bf16_model, lens, h, torch.tensor([[5, -1]] * 9), precision, chunk_size=2)


def test_tf32_setting_is_named_once(spiritlm_model, monkeypatch) -> None:
    monkeypatch.setattr(readout_module, "reduced_float32_matmul", lambda: "TF32 test setting")
    monkeypatch.setattr(readout_module, "_WARNED", set())
    lens = LogitLens(spiritlm_model)
    h = torch.randn(3, spiritlm_model.cfg.d_model)
    with pytest.warns(UserWarning, match="TF32 test setting"):
        read(spiritlm_model, lens, h, torch.tensor([[5, -1]] * 3), "fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read(spiritlm_model, lens, h, torch.tensor([[5, -1]] * 3), "fp32")


def test_reduced_float32_matmul_names_the_setting() -> None:
    from slm_transformerlens.lens.precision import reduced_float32_matmul

    saved = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert "tf32" in (reduced_float32_matmul() or "")
    finally:
        torch.set_float32_matmul_precision(saved)
    assert (reduced_float32_matmul() is None) == (saved == "highest")
