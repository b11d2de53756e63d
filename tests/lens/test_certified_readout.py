"""readout_precision="certified": a bf16/TF32 product whose undecided tokens are recomputed in float64.

The reference is independent of the package: float64 products rounded to float32 (``R``), ranked by hand
(count of strictly larger logits, ``torch.topk``). The adversarial rows hold logits 1e-6..1e-4 apart
across the k-th value and around a mid-vocabulary target (about 16 float32 ulps or more apart, so the
float32 rounding of the float64 logits keeps their order, far below bf16's error); the reduced-precision
inputs are emulated on the CPU (rounded in float32 tensors).
"""

from __future__ import annotations

import pytest
import torch

import slm_transformerlens as slt
from slm_transformerlens.errors import NonFiniteError
from slm_transformerlens.lens import LensError, LogitLens, read_vectors
from slm_transformerlens.lens import certified as certified_module
from slm_transformerlens.lens.certified import CertifiedError, certified_unembedding, round_to_format
from slm_transformerlens.lens.precision import check_readout_precision, default_readout_precision
from slm_transformerlens.lens.readout import vocab_views

K = 10


def adversarial_rows(weight: torch.Tensor, pool: torch.Tensor, n_rows: int, seed: int = 0):
    """Rows with float64 logits 1e-6..1e-4 apart across the k-th value (a cluster of k+2 near 0.5, above
    every other token) and around a target in the middle of the vocabulary (a cluster near 0).

    ``pool``: ``2 (k + 2)`` ids whose rows are lengthened x16 (each row shares them out between the two
    clusters anew). Returns the rows and each row's target id.
    """
    g = torch.Generator().manual_seed(seed)
    d = weight.shape[1]
    weight[pool] *= 16
    rows, targets = [], []
    for _ in range(n_rows):
        pick = pool[torch.randperm(len(pool), generator=g)]
        gaps = 10 ** (-6 + 2 * torch.rand(2 * (K + 2), generator=g, dtype=torch.float64))  # 1e-6 .. 1e-4
        desired = torch.cat([0.5 + torch.cumsum(gaps[: K + 2], 0), torch.cumsum(gaps[K + 2 :], 0) - 5e-4])
        a = weight[pick].double()
        h0 = torch.randn(d, generator=g, dtype=torch.float64) * 0.1 / float(weight.norm(dim=-1).median())
        h = h0 + a.T @ torch.linalg.solve(a @ a.T, desired - a @ h0)
        others = weight.double() @ h
        others[pick[: K + 2]] = float("-inf")
        assert others.max() < 0.49  # the top cluster is the top of the vocabulary
        rows.append(h.float())
        targets.append(int(pick[K + 2 + K // 2]))
    return torch.stack(rows), torch.tensor(targets)


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``R``: float64 logits rounded once to float32."""
    exact = x.double() @ weight.double().T
    return (exact if bias is None else exact + bias.double()).float()


def ranks_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (logits > logits.gather(1, targets[:, None])).sum(-1)


def problem(v: int = 3000, d: int = 64, n: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    weight = (torch.randn(v, d, generator=g) / 8).bfloat16().float()
    pool = torch.randperm(v, generator=g)[: 2 * (K + 2)]
    x, targets = adversarial_rows(weight, pool, n, seed)
    return weight.bfloat16().float(), x, targets


@pytest.mark.parametrize("fmt", ["bfloat16", "tf32", "bfloat16x2"])
def test_certified_ranks_and_top_k_are_exact_on_near_ties(fmt) -> None:
    weight, x, targets = problem()
    exact64 = x.double() @ weight.double().T
    ref = reference(x, weight)
    # the data: float32 rounding keeps float64's order, fp32's product too; a single bf16 product does not
    assert torch.equal(ranks_of(ref, targets), ranks_of(exact64, targets))
    assert torch.equal(ref.topk(K).indices, exact64.topk(K).indices)
    fp32 = x @ weight.T
    assert torch.equal(ranks_of(fp32, targets), ranks_of(exact64, targets))
    plain = round_to_format(x, fmt) @ round_to_format(weight, fmt).T
    wrong = (ranks_of(plain, targets) != ranks_of(exact64, targets)) | (
        plain.topk(K).indices != exact64.topk(K).indices
    ).any(-1)
    assert wrong.sum() >= len(x) // 2, int(wrong.sum())
    assert (ranks_of(exact64, targets) > 500).all()  # the targets lie in the dense middle

    unembedding = certified_unembedding(weight, None, fmt=fmt)
    logits = unembedding(x)
    lo, hi = logits.bounds()
    assert ((lo <= ref) & (ref <= hi)).all()  # the proven bound holds
    patched = logits.certify(k=K, masks=[None], targets=[targets[:, None]])
    assert torch.equal(ranks_of(patched, targets), ranks_of(exact64, targets))
    assert torch.equal(patched.topk(K).indices, exact64.topk(K).indices)
    assert torch.equal(patched.topk(K).values, ref.topk(K).values)  # the top-k logits are R exactly
    stats = unembedding.stats
    assert stats.rows == len(x) and stats.rows_rechecked > 0 and stats.rows_full == 0
    assert stats.rechecked >= len(x) * (K + 3)


def test_recheck_is_small_on_random_data() -> None:
    """Random Gaussian rows: mid-vocabulary targets cost a few percent of the logits at d = 64; a top-k
    alone costs about k per row even at d = 256 (the bound grows like sqrt(d) relative to the logits)."""
    g = torch.Generator().manual_seed(3)
    for d, with_targets in ((64, True), (256, False)):
        weight = (torch.randn(4000, d, generator=g) / 8).bfloat16().float()
        x = torch.randn(64, d, generator=g) * 3
        targets = torch.randint(0, 4000, (64, 2), generator=g)
        unembedding = certified_unembedding(weight, None)
        patched = unembedding(x).certify(k=K, masks=[None], targets=[targets] if with_targets else [])
        ref = reference(x, weight)
        assert torch.equal(patched.topk(K).indices, ref.topk(K).indices)
        stats = unembedding.stats
        assert stats.rows_full == 0
        if with_targets:
            assert torch.equal(ranks_of(patched, targets[:, 0]), ranks_of(ref, targets[:, 0]))
            assert torch.equal(ranks_of(patched, targets[:, 1]), ranks_of(ref, targets[:, 1]))
            assert stats.rechecked <= 0.03 * stats.tokens, stats
        else:
            assert stats.rechecked <= 1.5 * K * stats.rows, stats


def test_bound_holds_for_float32_weights_bias_and_scales() -> None:
    g = torch.Generator().manual_seed(4)
    for scale in (1e-3, 1.0, 1e3):
        weight = torch.randn(500, 96, generator=g) * scale  # not bf16-exact: the weight term counts
        bias = torch.randn(500, generator=g)
        x = torch.randn(40, 96, generator=g) * torch.exp2(torch.randint(-8, 8, (40, 1), generator=g).float())
        ref = reference(x, weight, bias)
        for fmt, block in (("bfloat16", 1024), ("tf32", 1024), ("bfloat16x2", 32)):
            lo, hi = certified_unembedding(weight, bias, fmt=fmt, block=block)(x).bounds()
            assert ((lo <= ref) & (ref <= hi)).all(), (scale, fmt)
            width = float((hi - lo).max())
            assert width < 0.05 * float(ref.abs().max()), (scale, fmt, width)  # a useful bound


def test_bound_holds_where_the_rounding_errors_align() -> None:
    """The worst case of the proof: unembedding rows parallel to a row's input rounding error (and
    weights whose own rounding error is parallel to the rounded input) reach the Cauchy-Schwarz bound."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(8, 200, generator=g)
    for fmt in ("bfloat16", "tf32"):
        xr = round_to_format(x, fmt)
        along_x = round_to_format(
            3 * (x - xr) / (x - xr).norm(dim=-1, keepdim=True), fmt
        )  # format-exact rows
        w_round = round_to_format(xr, fmt) + xr * 2.0**-9  # not format-exact, its error along x^
        weight = torch.cat([along_x, -along_x, w_round, torch.randn(100, 200, generator=g)])
        unembedding = certified_unembedding(weight, None, fmt=fmt)
        logits = unembedding(x)
        lo, hi = logits.bounds()
        ref = reference(x, weight)
        assert ((lo <= ref) & (ref <= hi)).all(), fmt
        error = (logits.values - ref).abs()[:, :8].diagonal()  # each row against its own aligned token
        input_term = (x - xr).norm(dim=-1) * along_x.norm(dim=-1)  # the proof's first term, here reached
        assert (error >= 0.95 * input_term).all(), fmt


def test_a_broken_bound_is_an_error_and_bad_arguments_are_named() -> None:
    """Every recomputed logit is checked against its bound: a bound too small (here: no input term)
    raises instead of certifying wrong ranks."""
    from dataclasses import replace

    weight, x, targets = problem()
    unembedding = certified_unembedding(weight, None, fmt="bfloat16")
    broken = replace(unembedding, w_norm=torch.zeros_like(unembedding.w_norm))
    with pytest.raises(CertifiedError, match="outside their proven bound"):
        broken(x).certify(k=K, masks=[None], targets=[targets[:, None]])
    with pytest.raises(CertifiedError, match="unknown format 'fp8'"):
        certified_unembedding(weight, None, fmt="fp8")
    with pytest.raises(CertifiedError, match="block=0"):
        certified_unembedding(weight, None, block=0)


def test_round_to_format() -> None:
    x = torch.tensor(
        [1 + 2.0**-11, 1 + 3 * 2.0**-11, 1 + 2.0**-12, -(1 + 2.0**-10 + 2.0**-11), 3.0e38, float("inf")]
    )
    expected = [1.0, 1 + 2.0**-9, 1.0, -(1 + 2.0**-9), 3.0e38, float("inf")]
    got = round_to_format(x, "tf32")
    assert got[:4].tolist() == expected[:4] and got[5] == float("inf")
    assert (got[4] - 3.0e38).abs() <= 3.0e38 * 2.0**-11
    bits = torch.randn(1000).view(torch.int32) & 0x1FFF  # TF32 keeps 10 of float32's 23 mantissa bits
    assert (round_to_format(torch.randn(1000), "tf32").view(torch.int32) & 0x1FFF).eq(0).all() and bits.ne(
        0
    ).any()
    assert torch.equal(round_to_format(x[:4], "bfloat16"), x[:4].bfloat16().float())


@pytest.fixture(scope="module")
def own_model(spiritlm_checkpoint):
    """A private float32 copy of the tiny model (its unembedding is rewritten)."""
    return slt.load(spiritlm_checkpoint, progress=False)


def model_problem(model, n: int = 16):
    vocab = model.speech_vocab
    g = torch.Generator().manual_seed(5)
    weight = (torch.randn(vocab.vocab_size, model.cfg.d_model, generator=g) / 8).bfloat16().float()
    pool = vocab.text_token_ids[torch.randperm(len(vocab.text_token_ids), generator=g)[: 2 * (K + 2)]]
    x, targets = adversarial_rows(weight, pool, n, seed=5)
    with torch.no_grad():
        model.W_U.copy_(weight.T)
    return weight, x, targets


def read(model, lens, h, targets, precision, **kwargs):
    vocab = model.speech_vocab
    return read_vectors(
        lens,
        h,
        None,
        views=vocab_views(vocab, ["full", "text", "speech"]),
        group_labels=vocab.group_labels,
        n_groups=len(vocab.group_names),
        top_k=K,
        targets={"t": targets},
        chunk_size=kwargs.pop("chunk_size", 5),
        readout_precision=precision,
        **kwargs,
    )


def test_read_vectors_certified_equals_hand_ranking(own_model) -> None:
    weight, x, targets = model_problem(own_model)
    lens = LogitLens(own_model, readout_precision="certified")
    assert lens.resolved_readout_precision() == "certified"
    lens.certified_unembedding().stats.reset()
    got = read(own_model, lens, x, targets[:, None], None)
    fp32 = read(own_model, lens, x, targets[:, None], "fp32")
    ref = reference(x, weight)
    vocab = own_model.speech_vocab
    for view, mask in vocab_views(vocab, ["full", "text", "speech"]).items():
        view_ref = ref if mask is None else ref.masked_fill(~mask, float("-inf"))
        assert torch.equal(got[view].top_ids, view_ref.topk(K).indices), view
        in_view = torch.ones(len(x), dtype=torch.bool) if mask is None else mask[targets]
        expected = torch.where(in_view, ranks_of(view_ref, targets), -1)
        assert torch.equal(got[view].ranks["t"], expected), view
        # probabilities: exact logits in the numerators, log Z within the bound (module docstring)
        torch.testing.assert_close(got[view].top_probs, fp32[view].top_probs, atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(got[view].masses, fp32[view].masses, atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(got[view].entropy, fp32[view].entropy, atol=1e-3, rtol=0)
    assert lens.certified_unembedding().stats.rows_rechecked > 0


@pytest.mark.parametrize("pool", ["max", "any"])
def test_certified_span_pooling_equals_hand_ranking(own_model, pool, monkeypatch) -> None:
    weight, x, targets = model_problem(own_model, n=12)
    groups = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4, 5, 5, 5])  # 6 rows of 1-3 member vectors
    row_targets = targets[torch.tensor([0, 2, 3, 6, 7, 9])]
    lens = LogitLens(own_model)
    ref = reference(x, weight)
    full_vocab = {"full": None}
    for limit in (certified_module.FULL_ROW_TOKENS, 0):  # 0: every row recomputed whole
        monkeypatch.setattr(certified_module, "FULL_ROW_TOKENS", limit)
        got = read_vectors(
            lens,
            x,
            None,
            views=full_vocab,
            group_labels=own_model.speech_vocab.group_labels,
            n_groups=len(own_model.speech_vocab.group_names),
            top_k=K,
            targets={"t": row_targets[:, None]},
            chunk_size=4,
            groups=groups,
            pool=pool,
            readout_precision="certified",
        )["full"]
        member_rank = ranks_of(ref, row_targets[groups])
        if pool == "max":
            pooled = torch.stack([ref[groups == w].amax(0) for w in range(6)])
            assert torch.equal(got.ranks["t"], ranks_of(pooled, row_targets))
            assert torch.equal(got.top_ids, pooled.topk(K).indices)
        else:
            best = torch.stack([member_rank[groups == w].min() for w in range(6)])
            assert torch.equal(got.ranks["t"], best)
    assert lens.certified_unembedding().stats.rows_full > 0


def test_certified_is_opt_in_and_named(spiritlm_model) -> None:
    assert check_readout_precision("certified") == "certified"
    assert default_readout_precision("cuda") == default_readout_precision("cpu") == "fp32"
    lens = LogitLens(spiritlm_model)
    assert lens.resolved_readout_precision() == "fp32"
    with pytest.raises(LensError, match="certified_logits"):
        lens.unembed(torch.zeros(2, spiritlm_model.cfg.d_model), precision="certified")
    from slm_transformerlens.cli import build_parser

    args = build_parser().parse_args(["analyze", "ckpt", "a.json", "--readout-precision", "certified"])
    assert args.readout_precision == "certified"


def test_certified_resolves_to_fp32_under_a_logit_transform(own_model, monkeypatch) -> None:
    lens = LogitLens(own_model)
    monkeypatch.setattr(
        type(lens), "_output_transform", lambda self: lambda logits: 30 * torch.tanh(logits / 30)
    )
    assert lens.resolved_readout_precision("certified") == "fp32"
    monkeypatch.setattr(type(lens), "_output_transform", lambda self: lambda logits: logits)
    assert lens.resolved_readout_precision("certified") == "certified"


def test_certified_non_finite_names_the_row(spiritlm_model) -> None:
    lens = LogitLens(spiritlm_model)
    h = torch.randn(9, spiritlm_model.cfg.d_model)
    h[6, 3] = float("nan")
    with pytest.raises(NonFiniteError, match=r"at row 6 hold NaN"):
        read(spiritlm_model, lens, h, torch.tensor([[5, -1]] * 9), "certified", chunk_size=2)


def test_tables_agree_with_fp32_on_a_bf16_model(spiritlm_checkpoint, utterance) -> None:
    """End to end (lens_table, transcription_table with span pooling): the ranks and top-k of the fp32
    read-out (accurate to float32 here: no near-ties), probabilities within the certified bound."""
    from slm_transformerlens.lens import lens_table, transcription_table

    model = slt.load(spiritlm_checkpoint, progress=False, dtype="bfloat16")
    tokens, spans = utterance
    kwargs = dict(word_spans=spans, positions="every", targets={"t": [5, 7]}, token_strings=False)
    fp32 = lens_table(model, tokens, readout_precision="fp32", **kwargs)
    lens = LogitLens(model, readout_precision="certified")
    certified = lens_table(model, tokens, lens=lens, **kwargs)
    assert certified["rank_t"].equals(fp32["rank_t"]) and certified["top_ids"].equals(fp32["top_ids"])
    assert (certified["prob_t"] - fp32["prob_t"]).abs().max() < 1e-4
    data = [(tokens, spans), (tokens, spans)]
    a = transcription_table(model, data, modalities=None, progress=False, lens=lens)
    b = transcription_table(model, data, modalities=None, progress=False, readout_precision="fp32")
    for column in ("rank", "next_rank", "top_ids"):
        assert a[column].equals(b[column]), column
    assert (a["prob"] - b["prob"]).abs().max() < 1e-4
    assert lens.certified_unembedding().stats.rows > 0
