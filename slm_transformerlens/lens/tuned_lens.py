"""The tuned lens: one affine translator per residual stream, then the model's final norm and unembedding.

As in tuned-lens (Belrose et al. 2023), translator ``i`` reads Hugging Face's ``hidden_states[i]``
(``resid_pre`` of block ``i``, which is ``resid_post`` of block ``i - 1``) and is added residually,
``h + W h + b``, with ``W`` and ``b`` zero-initialised, so an untrained tuned lens IS the logit lens.
The final stream (``resid_post`` of the last block) needs no translator. Optional ``resid_mid``
translators (``include_mid=True``) extend this to the middle of each block.

On disk: ``config.json`` + ``params.safetensors`` (keys ``layer_translators.{i}.weight/bias`` and
``mid_translators.{i}.weight/bias``), with the sha256 of the whole unembedding
(:func:`unembedding_sha256`) and the ``SpeechVocab.fingerprint()`` so that a lens is never applied to
another model silently. (tuned-lens' own ``unembed_hash`` hashes a printed summary of the matrix, i.e. only
its corners; it is kept for that format, and is the only check of lenses saved before the full hash.)
:meth:`TunedLens.from_tuned_lens` reads the published tuned-lens format (``config.json`` +
``params.pt``, loaded with ``weights_only=True``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from slm_transformerlens.lens.base import Lens, LensError, check_site
from slm_transformerlens.protocols import SpeechLM

__all__ = ["TunedLens", "TunedLensConfig", "unembedding_hash", "unembedding_sha256"]

CONFIG_NAME = "config.json"
PARAMS_NAME = "params.safetensors"
PUBLISHED_PARAMS_NAME = "params.pt"


def unembedding_hash(model: SpeechLM) -> str:
    """tuned-lens' hash of the unembedding (``sha256(np.array_str(W, precision=1))``, ``W`` as [vocab, d_model]).

    It hashes numpy's printed summary of a large matrix, i.e. only its corner rows and columns: kept for
    the tuned-lens format; :func:`unembedding_sha256` covers every entry.
    """
    weight = model.W_U.detach().T.float().cpu().numpy()
    return hashlib.sha256(str.encode(np.array_str(weight, precision=1))).hexdigest()


def unembedding_sha256(model: SpeechLM) -> str:
    """sha256 of EVERY entry of the unembedding ``W_U`` [d_model, d_vocab], rounded to bfloat16 first.

    The rounding makes the hash the same for the same weights loaded in float32 or bfloat16 (a lens trained
    on one loads on the other); a float16 model can round differently (load it in float32 or bfloat16).
    Any other change anywhere in the matrix changes it.
    """
    weight = model.W_U.detach()
    digest = hashlib.sha256(f"{tuple(weight.shape)}".encode())
    for start in range(0, weight.shape[0], 256):  # row blocks: no float32 copy of a large matrix at once
        block = weight[start : start + 256].to(torch.bfloat16).contiguous().cpu()
        digest.update(block.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class TunedLensConfig:
    """What a tuned lens was trained for (tuned-lens' fields plus ours; unknown keys are ignored)."""

    d_model: int
    num_hidden_layers: int
    bias: bool = True
    include_mid: bool = False
    base_model_name_or_path: str = ""
    base_model_revision: str | None = None
    unembed_hash: str | None = None
    unembed_sha256: str | None = None
    d_vocab: int | None = None
    vocab_fingerprint: str | None = None
    lens_type: str = "linear_tuned_lens"
    format: str = "slm_transformerlens"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TunedLensConfig:
        """Rebuild from a dict, ignoring unknown keys."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _translator(d_model: int, bias: bool) -> nn.Linear:
    layer = nn.Linear(d_model, d_model, bias=bias, dtype=torch.float32)
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class TunedLens(Lens):
    """Affine translators per residual stream, read through the model's final norm and unembedding.

    Args:
        model: the bridge (``HookedSLM``) the lens is for.
        bias: translators with a bias (tuned-lens default).
        include_mid: add translators for ``resid_mid`` of every block.

    ``lens.logits(h, layer, site)`` works exactly as for :class:`~slm_transformerlens.lens.LogitLens`.
    """

    def __init__(self, model: SpeechLM, *, bias: bool = True, include_mid: bool = False) -> None:
        super().__init__(model)
        vocab = getattr(model, "speech_vocab", None)
        self.config = TunedLensConfig(
            d_model=self.d_model,
            num_hidden_layers=self.n_layers,
            bias=bias,
            include_mid=include_mid,
            base_model_name_or_path=str(getattr(model.cfg, "model_name", "") or ""),
            unembed_hash=unembedding_hash(model),
            unembed_sha256=unembedding_sha256(model),
            d_vocab=self.d_vocab,
            vocab_fingerprint=vocab.fingerprint() if vocab is not None else None,
        )
        device = model.W_U.device
        self.layer_translators = nn.ModuleList(
            [_translator(self.d_model, bias) for _ in range(self.n_layers)]
        ).to(device)
        self.mid_translators = (
            nn.ModuleList([_translator(self.d_model, bias) for _ in range(self.n_layers)]).to(device)
            if include_mid
            else None
        )

    def translator(self, layer: int, site: str = "resid_post") -> nn.Linear | None:
        """The translator used at ``(layer, site)``; ``None`` for the final stream (identity)."""
        check_site(site)
        if site == "resid_mid":
            if self.mid_translators is None:
                raise LensError(
                    "this tuned lens has no resid_mid translators; train one with include_mid=True "
                    "or read resid_pre / resid_post"
                )
            return self.mid_translators[int(layer)]  # type: ignore[return-value]
        stream = int(layer) + (1 if site == "resid_post" else 0)
        return None if stream >= self.n_layers else self.layer_translators[stream]  # type: ignore[return-value]

    def transform_hidden(
        self, h: Float[Tensor, "... d_model"], layer: int, site: str = "resid_post"
    ) -> Float[Tensor, "... d_model"]:
        """``h + W h + b`` with the translator of ``(layer, site)`` (identity on the final stream)."""
        h = h.float()
        translator = self.translator(layer, site)
        return h if translator is None else h + translator(h)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, format: str = "slm_transformerlens") -> Path:
        """Write the lens into directory ``path``.

        Args:
            path: the directory.
            format: ``"slm_transformerlens"`` (default: ``config.json`` + ``params.safetensors``, with
                the vocabulary fingerprint; read with :meth:`load`) or ``"tuned-lens"`` (the tuned-lens
                package's ``config.json`` + ``params.pt``, which its
                ``TunedLens.from_model_and_pretrained(model, path)`` reads; :meth:`from_tuned_lens` too).

        Raises:
            LensError: an unknown format, or ``"tuned-lens"`` for a lens with ``resid_mid`` translators
                (that format has one translator per layer input only).
        """
        from safetensors.torch import save_file

        if format not in ("slm_transformerlens", "tuned-lens"):
            raise LensError(f"unknown lens format {format!r}; use 'slm_transformerlens' or 'tuned-lens'")
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        if format == "tuned-lens":
            from slm_transformerlens.interop.tuned_lens_format import save_tuned_lens_format

            return save_tuned_lens_format(self, directory)
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / PARAMS_NAME), metadata={"format": "pt"})
        (directory / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2))
        return directory

    @classmethod
    def load(cls, path: str | Path, model: SpeechLM) -> TunedLens:
        """Load a lens saved with :meth:`save` for ``model``.

        The whole unembedding must match (:func:`unembedding_sha256`). A lens saved before that hash was
        recorded is checked with tuned-lens' corner hash only, with a warning to save it again.

        Raises:
            LensError: missing, damaged or mismatched files (another lens's parameters), or a lens trained
                for another model (different unembedding, vocabulary layout, width or depth).
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(path)
        config = _read_config(directory)
        params = directory / PARAMS_NAME
        if not params.is_file():
            raise LensError(f"{params} is missing; a saved TunedLens has {CONFIG_NAME} and {PARAMS_NAME}")
        lens = cls._for_model(config, model, check_hash=True)
        try:
            state = load_file(str(params))
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise LensError(
                f"{params} cannot be read ({_first_line(error)}): it is damaged or not a safetensors file; "
                "save the lens again with TunedLens.save"
            ) from None
        _check_state(lens, {k: v for k, v in state.items()}, params)
        lens.load_state_dict({k: v.float().to(model.W_U.device) for k, v in state.items()}, strict=True)
        return lens

    @classmethod
    def from_tuned_lens(cls, path: str | Path, model: SpeechLM, *, check_hash: bool = True) -> TunedLens:
        """Read a lens in the published tuned-lens format (``config.json`` + ``params.pt``).

        ``params.pt`` is opened with ``torch.load(weights_only=True)``; keys ``{i}.weight`` /
        ``{i}.bias`` (``layer_translators.state_dict()``) or ``layer_translators.{i}.*`` are accepted.

        Args:
            check_hash: refuse a lens whose ``unembed_hash`` differs from ``model``'s (tuned-lens only warns).
        """
        directory = Path(path)
        config = _read_config(directory)
        params = directory / PUBLISHED_PARAMS_NAME
        if not params.is_file():
            raise LensError(
                f"{params} is missing; the tuned-lens format has {CONFIG_NAME} and {PUBLISHED_PARAMS_NAME}"
            )
        config.include_mid = False
        config.vocab_fingerprint = None
        lens = cls._for_model(config, model, check_hash=check_hash)
        raw = _load_tensors(params)
        state = {}
        for key, value in raw.items():
            name = str(key).removeprefix("layer_translators.")
            if name.split(".")[0].isdigit():
                if not isinstance(value, Tensor):
                    raise LensError(f"{params}: {key!r} is not a tensor; it is not a tuned lens's parameters")
                state[f"layer_translators.{name}"] = value
        _check_state(lens, state, params, prefix="layer_translators.")
        lens.load_state_dict(
            {k: v.float().to(model.W_U.device) for k, v in state.items()},
            strict=False,
        )
        return lens

    @classmethod
    def _for_model(cls, config: TunedLensConfig, model: SpeechLM, *, check_hash: bool) -> TunedLens:
        d_model, n_layers = int(model.cfg.d_model), int(model.cfg.n_layers)
        if (config.d_model, config.num_hidden_layers) != (d_model, n_layers):
            raise LensError(
                f"this lens was trained for a model with d_model={config.d_model} and "
                f"{config.num_hidden_layers} layers, but the model has d_model={d_model} and {n_layers} layers"
            )
        vocab = getattr(model, "speech_vocab", None)
        if (
            config.vocab_fingerprint is not None
            and vocab is not None
            and vocab.fingerprint() != config.vocab_fingerprint
        ):
            raise LensError(
                "this lens was trained for a model with a different speech vocabulary layout "
                "(SpeechVocab fingerprint mismatch); train a lens for this model"
            )
        if check_hash and config.unembed_sha256 is not None:
            if unembedding_sha256(model) != config.unembed_sha256:
                raise LensError(
                    "this lens was trained for a model with a different unembedding (the sha256 of the whole "
                    "unembedding differs): it belongs to another checkpoint; train a lens for this model (the "
                    "same checkpoint loaded in float16 can also differ: load it in float32 or bfloat16)"
                )
        elif check_hash and config.format == "slm_transformerlens":
            import warnings

            warnings.warn(
                "this lens was saved before slm_transformerlens recorded the hash of the whole unembedding; "
                "only tuned-lens' corner hash was compared. Save it again (TunedLens.save) to record it",
                stacklevel=3,
            )
        if check_hash and config.unembed_hash is not None and unembedding_hash(model) != config.unembed_hash:
            raise LensError(
                "this lens was trained for a model with a different unembedding (unembed_hash mismatch): "
                "it belongs to another checkpoint; train a lens for this model"
                + ("" if config.format == "slm_transformerlens" else ", or pass check_hash=False to force it")
            )
        lens = cls(model, bias=config.bias, include_mid=config.include_mid)
        lens.config.base_model_name_or_path = config.base_model_name_or_path
        lens.config.base_model_revision = config.base_model_revision
        return lens

    def extra_repr(self) -> str:
        return f"n_layers={self.n_layers}, d_model={self.d_model}, bias={self.config.bias}, include_mid={self.config.include_mid}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def _load_tensors(params: Path) -> dict[Any, Any]:
    """``params.pt`` read with ``torch.load(weights_only=True)``: tensors only, never arbitrary objects.

    Raises:
        LensError: the file holds other objects (never unpickled: that could run code), is damaged, or is
            not a dict.
    """
    import pickle
    import zipfile

    try:
        raw = torch.load(params, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise LensError(
            f"{params} holds objects other than tensors, which are never unpickled (that can run code); a "
            "tuned lens's params.pt holds only tensors: use one saved by tuned-lens or TunedLens.save"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise LensError(
            f"{params} cannot be read ({_first_line(error)}): it is damaged or not a torch.save file; "
            "save the lens again"
        ) from None
    if not isinstance(raw, dict):
        raise LensError(f"{params} does not hold a state dict (got {type(raw).__name__})")
    return raw


def _check_state(lens: TunedLens, state: dict[str, Any], params: Path, prefix: str = "") -> None:
    """The parameters' names and shapes match ``lens`` (``prefix``: only those keys are compared).

    Raises:
        LensError: missing, unexpected or differently shaped parameters (another lens's file).
    """
    expected = {k: tuple(v.shape) for k, v in lens.state_dict().items() if k.startswith(prefix)}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [
        f"{k} {got[k]} (expected {expected[k]})"
        for k in sorted(set(got) & set(expected))
        if got[k] != expected[k]
    ]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"missing {missing[:3]}")
        if unexpected:
            problems.append(f"unexpected {unexpected[:3]}")
        if shapes:
            problems.append(f"shapes {shapes[:2]}")
        raise LensError(
            f"{params} does not hold the parameters of this lens ({lens.n_layers} layers, d_model "
            f"{lens.d_model}, bias={lens.config.bias}, include_mid={lens.config.include_mid}): "
            f"{'; '.join(problems)}. It is another lens's file: pass the folder saved together with its "
            f"{CONFIG_NAME}"
        )


def _read_config(directory: Path) -> TunedLensConfig:
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise LensError(f"{path} is missing; a tuned lens directory holds {CONFIG_NAME} and the parameters")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise LensError(
            f"{path} is not valid JSON ({_first_line(error)}); pass a folder saved by TunedLens.save or tuned-lens"
        ) from None
    if not isinstance(data, dict):
        raise LensError(f"{path} is not a JSON object; it is not a tuned lens config")
    for key in ("d_model", "num_hidden_layers"):
        if key not in data:
            raise LensError(f"{path} lacks {key!r}; it is not a tuned lens config")
    data.setdefault("format", "tuned-lens")
    return TunedLensConfig.from_dict(data)
