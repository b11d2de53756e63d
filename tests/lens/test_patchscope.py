"""PatchscopeLens against a hand-written patchscope: plain TransformerLens hooks, one patch per forward."""

from __future__ import annotations

import pytest
import torch

from slm_transformerlens.lens import LensError, PatchscopeLens, lens_table, patchscope_prompt
from slm_transformerlens.organism.shipped import load_organism

TOLERANCE = 1e-5  # log-probabilities


@pytest.fixture(scope="module")
def organism():
    return load_organism(progress=False)


def hand_written(model, prompt, vectors, layer: int, site: str, *, raw: bool = False) -> torch.Tensor:
    """One ``run_with_hooks`` of the whole target prompt per vector: log-probs (or logits) at the read position."""
    tokens = torch.tensor([prompt.tokens])
    out = []
    for vector in vectors:

        def write(act, hook, vector=vector):
            act = act.clone()
            act[0, prompt.position] = vector
            return act

        with torch.no_grad():
            logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_{site}", write)])
        read = logits[0, prompt.read_position].float()
        out.append(read if raw else read.log_softmax(-1))
    return torch.stack(out)


def source_residuals(model) -> dict[str, torch.Tensor]:
    """Residuals of 4 positions of a text run at every hook (the vectors a lens would read)."""
    tokens = torch.tensor([[model.speech_vocab.bos_token_id or 1, *range(20, 26)]])
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: "resid_p" in name)
    return {name: value[0, 2:6] for name, value in cache.items()}


@pytest.mark.parametrize("which", ["tiny-spiritlm", "tiny-sims-qwen2", "organism"])
def test_equals_hand_written_patchscope_every_layer(
    which, spiritlm_model, organism, checkpoint_factory
) -> None:
    """Both prefix modes (keys/values of the prefix reused, or the whole prompt per patch), 2 forwards each."""
    import slm_transformerlens as slt

    if which == "tiny-sims-qwen2":
        path, kwargs = checkpoint_factory("sims-qwen2-tied")
        model = slt.load(path, progress=False, **kwargs)
    else:
        model = spiritlm_model if which == "tiny-spiritlm" else organism
    lenses = [
        PatchscopeLens(model, prefix_cache=mode, max_batch=3, progress=False) for mode in ("kv", "none")
    ]
    residuals = source_residuals(model)
    for site in ("resid_pre", "resid_post"):
        for layer in range(model.cfg.n_layers):
            vectors = residuals[f"blocks.{layer}.hook_{site}"]
            expected = hand_written(model, lenses[0].prompt, vectors, layer, site)
            for lens in lenses:
                with torch.no_grad():
                    got = lens.logits(vectors, layer, site).log_softmax(-1)
                assert got.dtype == torch.float32 and got.shape == expected.shape
                assert (got - expected).abs().max().item() <= TOLERANCE, (lens.prefix_cache, site, layer)


def test_target_layer_and_last_read_position(organism) -> None:
    model = organism
    template = "cat cat ; {x} ; dog"
    lens = PatchscopeLens(
        model, template, read="last", target_layer=lambda layer: min(layer + 2, 7), progress=False
    )
    assert lens.prompt.read_position == len(lens.prompt.tokens) - 1 > lens.prompt.position
    residuals = source_residuals(model)
    for layer in (0, 3, 7):
        vectors = residuals[f"blocks.{layer}.hook_resid_post"]
        expected = hand_written(model, lens.prompt, vectors, min(layer + 2, 7), "resid_post")
        with torch.no_grad():
            got = lens.logits(vectors, layer).log_softmax(-1)
        assert (got - expected).abs().max().item() <= TOLERANCE


def test_own_residual_at_own_position_reproduces_the_model(organism) -> None:
    """Writing a prompt's own residual back at the placeholder (same layer) changes nothing."""
    lens = PatchscopeLens(organism, progress=False)
    tokens = torch.tensor([lens.prompt.tokens])
    with torch.no_grad():
        logits, cache = organism.run_with_cache(tokens)
    expected = logits[0, lens.prompt.read_position].float().log_softmax(-1)
    for layer in range(organism.cfg.n_layers):
        own = cache[f"blocks.{layer}.hook_resid_pre"][0, lens.prompt.position]
        with torch.no_grad():
            got = lens.logits(own[None], layer, "resid_pre")[0].log_softmax(-1)
        assert (got - expected).abs().max().item() <= TOLERANCE


def test_lens_table_takes_the_patchscope(spiritlm_model, utterance) -> None:
    """lens_table(lens=PatchscopeLens) ranks (text view, span max) as the hand-written read-out does."""
    model = spiritlm_model
    tokens, spans = utterance
    lens = PatchscopeLens(model, progress=False)
    target = model.tokenizer(" girl", add_special_tokens=False).input_ids[:1]
    table = lens_table(
        model, tokens, word_spans=spans, lens=lens, layers=[0, 2], positions="max", views=("text",),
        targets={"t": target},
    )  # fmt: skip
    _, cache = model.run_with_cache(tokens)
    text = model.speech_vocab.group_mask("text")
    for layer in (0, 2):
        rows = table[table["layer"] == layer]
        assert len(rows) == len(spans)
        for _, row in rows.iterrows():
            span = spans[spans["word_index"] == row["word_index"]].iloc[0]
            vectors = cache[f"blocks.{layer}.hook_resid_post"][0, span["start"] : span["stop"]]
            pooled = hand_written(model, lens.prompt, vectors, layer, "resid_post", raw=True).amax(0)
            pooled = pooled.masked_fill(~text, float("-inf"))
            assert int(row["rank_t"]) == int((pooled > pooled[target[0]]).sum())


def test_bad_prompts_and_sites_raise(spiritlm_model, organism) -> None:
    for bad in ("no placeholder here", "{x} and {x}"):
        with pytest.raises(LensError, match="exactly one placeholder"):
            PatchscopeLens(spiritlm_model, bad)
    with pytest.raises(LensError, match="style"):
        patchscope_prompt(spiritlm_model, style="fancy")
    with pytest.raises(LensError, match="one token"):
        patchscope_prompt(organism, filler=" a very long filler")
    lens = PatchscopeLens(organism, target_layer=9, progress=False)
    with pytest.raises(LensError, match="target layer 9"):
        lens.logits(torch.zeros(1, organism.cfg.d_model), 0)
    with pytest.raises(LensError, match="resid_mid"):
        PatchscopeLens(organism, progress=False).logits(torch.zeros(1, organism.cfg.d_model), 0, "resid_mid")


def test_family_style_puts_the_text_marker_first(spiritlm_model, organism) -> None:
    for model in (spiritlm_model, organism):
        plain, family = patchscope_prompt(model), patchscope_prompt(model, style="family")
        marker = model.speech_vocab.markers["text"]
        assert marker in family.tokens and marker not in plain.tokens
        assert (
            family.tokens[1] == marker
            if model.speech_vocab.bos_token_id is not None
            else family.tokens[0] == marker
        )
        assert len(family.tokens) == len(plain.tokens) + 1 and family.position == plain.position + 1


@pytest.mark.realmodel
def test_planted_word_is_decoded_and_a_shuffled_one_is_not(smollm2_sims_model) -> None:
    """SmolLM2-135M (real weights) copies with the identity prompt: a word's text embedding planted as the
    residual at layer a (scaled to that layer's median residual norm) is read back as the word."""
    model = smollm2_sims_model
    tok = model.tokenizer
    words = [
        "cat",
        "dog",
        "house",
        "tree",
        "water",
        "music",
        "river",
        "king",
        "queen",
        "apple",
        "car",
        "book",
        "city",
        "table",
        "window",
        "chair",
    ]
    ids = torch.tensor([tok(" " + w, add_special_tokens=False).input_ids[0] for w in words])
    text = model.speech_vocab.group_mask("text")
    sentence = tok(
        " the weather today is quite nice and the people walk in the park", add_special_tokens=False
    )
    _, cache = model.run_with_cache(torch.tensor([sentence.input_ids]))
    lens = PatchscopeLens(model, progress=False)
    embeddings = model.W_E.detach().float()[ids]
    shuffle = torch.randperm(embeddings.shape[1], generator=torch.Generator().manual_seed(0))

    def top1(vectors: torch.Tensor, layer: int) -> float:
        with torch.no_grad():
            logits = lens.logits(vectors, layer, "resid_pre").masked_fill(~text, float("-inf"))
        return (logits.argmax(-1) == ids).float().mean().item()

    for layer in (0, 24):
        norm = cache[f"blocks.{layer}.hook_resid_pre"][0, 1:].norm(dim=-1).median()
        planted = embeddings / embeddings.norm(dim=-1, keepdim=True) * norm
        assert top1(planted, layer) >= 0.6, layer
        assert top1(planted[:, shuffle], layer) <= 0.1, layer


def test_cli_analyze_with_the_patchscope(checkpoint_factory, tmp_path, capsys) -> None:
    import pandas as pd

    from slm_transformerlens.cli import main
    from tests.test_bad_inputs import SPIRIT_BIN, unit_file

    path, _ = checkpoint_factory(SPIRIT_BIN)
    units = unit_file(tmp_path)
    common = [str(path), str(units), "--no-charts", "--quiet", "-k", "5"]
    assert main(["analyze", *common, "--out", str(tmp_path / "logit")]) == 0
    argv = ["analyze", *common, "--out", str(tmp_path / "ps"), "--lens", "patchscope"]
    assert main([*argv, "--patchscope-prompt", "a {x} b {x}"]) == 2
    assert "exactly one placeholder" in capsys.readouterr().err
    assert main([*argv, "--patchscope-prompt", "cat cat ; {x}", "--overwrite"]) == 0
    logit, patchscope = (pd.read_csv(tmp_path / name / "summary.csv") for name in ("logit", "ps"))
    assert list(logit.columns) == list(patchscope.columns) and len(logit) == len(patchscope)
    assert main(["analyze", *common, "--out", str(tmp_path / "x"), "--patchscope-prompt", "{x}"]) == 2
    assert "needs --lens patchscope" in capsys.readouterr().err


def test_lens_comparison_chart_has_a_panel_per_lens_with_its_control() -> None:
    pytest.importorskip("altair")
    import pandas as pd

    from slm_transformerlens.viz.lenses import lens_comparison_chart, lens_comparison_frame

    def summary(rate: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "layer": [0, 1, 0],
                "metric": ["transcription", "transcription", "next_word"],
                "k": [10, 10, 10],
                "view": ["text"] * 3,
                "rate": [rate, rate + 0.1, 0.9],
                "ci_low": [rate - 0.05] * 3,
                "ci_high": [rate + 0.05] * 3,
                "shuffled_rate": [0.02, 0.03, 0.5],
                "n": [40, 40, 40],
            }
        )

    frame = lens_comparison_frame({"patchscope": summary(0.3), "logit": summary(0.2)})
    assert frame.groupby("lens")["rate"].apply(list).to_dict() == {
        "logit": [0.2, pytest.approx(0.3)],
        "patchscope": [0.3, pytest.approx(0.4)],
    }
    assert frame["shuffled_rate"].tolist() == [0.02, 0.03, 0.02, 0.03]
    spec = lens_comparison_chart(frame).to_dict()
    assert spec["facet"]["column"]["sort"] == ["logit", "patchscope"]
    marks = [
        layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"]
        for layer in spec["spec"]["layer"]
    ]
    assert marks == ["area", "line", "line"]
    with pytest.raises(ValueError, match="missing"):
        lens_comparison_chart(frame.drop(columns="shuffled_rate"))


def test_shipped_patchscope_curves_agree_with_the_shipped_evaluation() -> None:
    """The logit-lens rows of patchscope_curves.csv are the organism evaluation's curves (same data, read-out
    and control), and at the last layer the patchscope equals the logit lens."""
    import pandas as pd

    from slm_transformerlens.organism.shipped import shipped_root

    ours = pd.read_csv(shipped_root() / "evaluation" / "patchscope_curves.csv")
    shipped = pd.read_csv(shipped_root() / "evaluation" / "curves.csv")
    names = {"span": "transcription_span", "last": "transcription_last"}
    names |= {f"{k}_shuffled": f"{v}_shuffled" for k, v in names.items()}
    logit = ours[ours["lens"] == "logit"].assign(metric=lambda f: f["metric"].map(names))
    joined = logit.merge(shipped, on=["model", "metric", "layer"], suffixes=("", "_shipped"))
    assert len(joined) == len(logit) == 6 * 8 * 4
    assert (joined["rate"] - joined["rate_shipped"]).abs().max() < 1e-12
    last = ours[ours["layer"] == 7].pivot_table(index=["model", "metric"], columns="lens", values="rate")
    assert (last["logit"] - last["patchscope"]).abs().max() < 1e-12
