"""Quantizers: continuous encoder features -> one discrete unit per frame.

Formats read (all without executing code from the file, except joblib with an explicit opt-in):

- k-means centroids as ``.npy`` ``[K, d]`` (``np.load(allow_pickle=False)``);
- a torch dict ``{"cluster_centers": [K, d], "n_clusters": K}`` (SpiritLM / textlesslib ``KmeansModel``),
  loaded with ``torch.load(weights_only=True)``; numpy arrays inside are allowed through torch's
  restricted unpickler;
- a joblib pickle of a scikit-learn ``KMeans`` (slamkit / fairseq ``*_km500.bin``): a pickle can run
  arbitrary code, so it is only unpickled with ``trust_pickle=True``;
- SpiritLM's linear CTC quantizer ``{"model_cfg": {"vocab_size", "dim", "upstream_dim"}, "model_weight":
  state_dict}``: a 3-layer MLP; argmax; blank (= ``vocab_size``) frames take the unit to their left.

Every k-means quantizer assigns the nearest centroid (squared Euclidean distance, float64), so all
k-means formats give identical units for identical centroids.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from slm_transformerlens.errors import SpeechInputError
from slm_transformerlens.safe_pickle import is_pickle_file, refusal_reason

__all__ = [
    "KMeansQuantizer",
    "LinearCTCQuantizer",
    "Quantizer",
    "load_quantizer",
]


@runtime_checkable
class Quantizer(Protocol):
    """Anything that maps ``[frames, d]`` features to ``[frames]`` unit ids in ``[0, n_units)``."""

    n_units: int

    def __call__(self, features: Float[Tensor, "frames d"]) -> Int[Tensor, " frames"]: ...


class KMeansQuantizer:
    """Nearest-centroid quantizer.

    Args:
        centers: ``[K, d]`` cluster centres.
    """

    def __init__(self, centers: Float[Tensor, "K d"] | np.ndarray) -> None:
        centers_t = torch.as_tensor(np.asarray(centers) if not isinstance(centers, Tensor) else centers)
        if centers_t.ndim != 2 or centers_t.shape[0] == 0:
            raise SpeechInputError(
                f"k-means centres must be a non-empty [K, d] matrix, got shape {tuple(centers_t.shape)}"
            )
        self.centers = centers_t.to(torch.float64)
        self._norms = (self.centers**2).sum(dim=1)

    @property
    def n_units(self) -> int:
        """K, the codebook size."""
        return int(self.centers.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension d."""
        return int(self.centers.shape[1])

    def __call__(self, features: Float[Tensor, "frames d"]) -> Int[Tensor, " frames"]:
        """Index of the nearest centre for every frame."""
        x = torch.as_tensor(features).to(torch.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise SpeechInputError(
                f"features of shape {tuple(x.shape)} do not fit a k-means codebook of dimension {self.dim}; "
                "is the encoder layer / model the one the codebook was trained on?"
            )
        distances = (x**2).sum(dim=1, keepdim=True) - 2.0 * x @ self.centers.T + self._norms
        return distances.argmin(dim=1)

    # ------------------------------------------------------------------ loaders
    @classmethod
    def from_npy(cls, path: str | Path) -> KMeansQuantizer:
        """Centres from a ``.npy`` ``[K, d]`` array (never unpickles)."""
        try:
            return cls(np.load(path, allow_pickle=False))
        except ValueError as error:
            raise SpeechInputError(f"{path} is not a plain numeric .npy array ({error})") from None

    @classmethod
    def from_torch(cls, path: str | Path) -> KMeansQuantizer:
        """Centres from a torch dict ``{"cluster_centers": [K, d], "n_clusters": K}`` (weights_only load)."""
        states = _torch_load_restricted(path)
        if not isinstance(states, dict) or "cluster_centers" not in states:
            raise SpeechInputError(
                f"{path} is not a k-means checkpoint: expected a dict with 'cluster_centers'"
            )
        quantizer = cls(states["cluster_centers"])
        if "n_clusters" in states and int(states["n_clusters"]) != quantizer.n_units:
            raise SpeechInputError(
                f"{path}: n_clusters={states['n_clusters']} but cluster_centers has {quantizer.n_units} rows"
            )
        return quantizer

    @classmethod
    def from_sklearn(cls, kmeans: Any) -> KMeansQuantizer:
        """Centres of a fitted scikit-learn ``KMeans`` / ``MiniBatchKMeans``."""
        if not hasattr(kmeans, "cluster_centers_"):
            raise SpeechInputError(
                f"{type(kmeans).__name__} has no cluster_centers_: not a fitted k-means model"
            )
        return cls(np.asarray(kmeans.cluster_centers_))

    @classmethod
    def from_joblib(cls, path: str | Path, *, trust_pickle: bool = False) -> KMeansQuantizer:
        """Centres of a joblib-pickled scikit-learn k-means (slamkit's format).

        Args:
            trust_pickle: must be ``True``: unpickling runs code from the file. Only do it for files from
                a source you trust, or convert them once to ``.npy`` with :meth:`save_npy`.

        Raises:
            SpeechInputError: without ``trust_pickle=True``.
        """
        if not trust_pickle:
            raise SpeechInputError(
                f"{path} is a pickle (joblib): loading it can execute arbitrary code. Pass trust_pickle=True "
                "if you trust its source, or convert it once to a .npy of cluster_centers_ and load that."
            )
        import joblib

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn version-mismatch warnings
            model = joblib.load(path)
        return cls.from_sklearn(model)

    def save_npy(self, path: str | Path) -> None:
        """Save the centres as a pickle-free ``.npy`` (float32)."""
        np.save(path, self.centers.to(torch.float32).numpy(), allow_pickle=False)


def _torch_load_restricted(path: str | Path) -> Any:
    """``torch.load(weights_only=True)``, allowing plain numpy arrays (as SpiritLM saves centroids)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4" on non-torch files
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    numpy_globals: list[Any] = [np.ndarray, np.dtype]
    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    reconstruct = getattr(core.multiarray, "_reconstruct", None)
    if reconstruct is not None:
        numpy_globals.append(reconstruct)
    numpy_globals += [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64)]
    try:
        with torch.serialization.safe_globals(numpy_globals), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise SpeechInputError(
            f"{path}: {refusal_reason(error)}; refusing to unpickle it. Convert it once, in an environment "
            "you trust, to a .npy of the cluster centres (np.save(path, centers, allow_pickle=False))"
        ) from None


class LinearCTCQuantizer(nn.Module):
    """SpiritLM's linear quantizer (``L11_quantizer_500.pt``): MLP + argmax, CTC blanks filled from the left.

    The layout is SpiritLM's ``LinearQuantizerModel``: with ``out = vocab_size + 1`` (blank last) and
    ``mid = upstream_dim - out``: ``Linear(dim, dim - mid//4), LeakyReLU, Linear(., dim - mid//2),
    LeakyReLU, Linear(., out)``.
    """

    def __init__(self, model_cfg: dict[str, Any], state_dict: dict[str, Tensor] | None = None) -> None:
        super().__init__()
        try:
            self.vocab_size = int(model_cfg["vocab_size"])
            dim = int(model_cfg["dim"])
            upstream_dim = int(model_cfg["upstream_dim"])
        except KeyError as error:
            raise SpeechInputError(f"linear quantizer model_cfg lacks {error}") from None
        out_dim = self.vocab_size + 1
        mid_dim = upstream_dim - out_dim
        self.model_cfg = dict(model_cfg)
        self.dim = dim
        self.encoder = nn.Sequential(
            nn.Linear(dim, dim - mid_dim // 4),
            nn.LeakyReLU(),
            nn.Linear(dim - mid_dim // 4, dim - mid_dim // 2),
            nn.LeakyReLU(),
            nn.Linear(dim - mid_dim // 2, out_dim),
        )
        if state_dict is not None:
            try:
                self.encoder.load_state_dict(state_dict)
            except RuntimeError as error:
                raise SpeechInputError(
                    f"linear quantizer weights do not fit its model_cfg: {error}"
                ) from None

    @property
    def n_units(self) -> int:
        """Number of units (without the CTC blank)."""
        return self.vocab_size

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> LinearCTCQuantizer:
        """Load ``{"model_cfg": {...}, "model_weight": state_dict}`` with ``torch.load(weights_only=True)``."""
        states = _torch_load_restricted(path)
        if not isinstance(states, dict) or "model_cfg" not in states or "model_weight" not in states:
            raise SpeechInputError(
                f"{path} is not a SpiritLM linear quantizer: expected 'model_cfg' and 'model_weight'"
            )
        return cls(dict(states["model_cfg"]), states["model_weight"])

    def save_checkpoint(self, path: str | Path) -> None:
        """Save in SpiritLM's layout."""
        torch.save({"model_cfg": self.model_cfg, "model_weight": self.encoder.state_dict()}, path)

    @torch.no_grad()
    def forward(self, features: Float[Tensor, "frames d"]) -> Int[Tensor, " frames"]:
        """Units per frame; a blank frame takes the nearest non-blank unit to its left (cyclically, as SpiritLM)."""
        x = torch.as_tensor(features, dtype=torch.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise SpeechInputError(
                f"features of shape {tuple(x.shape)} do not fit a quantizer of input dim {self.dim}"
            )
        code = self.encoder(x).argmax(dim=-1)
        blank = self.vocab_size
        if code.numel() and bool((code == blank).all()):
            raise SpeechInputError(
                "the quantizer predicted CTC blank for every frame; there is no unit to fill from"
            )
        while bool((code == blank).any()):  # SpiritLM: code[blank] = roll(code, 1)[blank]
            is_blank = code == blank
            code[is_blank] = torch.roll(code, 1)[is_blank]
        return code


def load_quantizer(
    path: str | Path,
    *,
    kind: Literal["auto", "npy", "torch", "joblib", "linear"] = "auto",
    trust_pickle: bool = False,
) -> KMeansQuantizer | LinearCTCQuantizer:
    """Load any supported quantizer file.

    ``kind="auto"`` picks by extension (``.npy``) or content: a torch file with ``model_cfg`` is the linear
    quantizer, with ``cluster_centers`` a k-means dict; a file that torch's safe loader refuses is read
    as joblib (which needs ``trust_pickle=True``) only when it IS a pickle / joblib file
    (:func:`~slm_transformerlens.safe_pickle.is_pickle_file`); anything else is an error.
    """
    path = Path(path)
    if not path.exists():
        raise SpeechInputError(f"quantizer file {path} does not exist")
    if kind == "npy" or (kind == "auto" and path.suffix == ".npy"):
        return KMeansQuantizer.from_npy(path)
    if kind == "joblib":
        return KMeansQuantizer.from_joblib(path, trust_pickle=trust_pickle)
    if kind == "linear":
        return LinearCTCQuantizer.from_checkpoint(path)
    if kind == "torch":
        return KMeansQuantizer.from_torch(path)
    try:
        states = _torch_load_restricted(path)
    except (SpeechInputError, RuntimeError, pickle.UnpicklingError, EOFError, KeyError, ValueError) as error:
        if is_pickle_file(path):
            return KMeansQuantizer.from_joblib(path, trust_pickle=trust_pickle)
        reason = str(error) if isinstance(error, SpeechInputError) else refusal_reason(error)
        raise SpeechInputError(
            f"{path} is not a quantizer file this package reads ({reason}); expected a k-means .npy, a torch "
            "dict with 'cluster_centers', a SpiritLM linear quantizer, or a joblib k-means pickle"
        ) from None
    if isinstance(states, dict) and "model_cfg" in states:
        return LinearCTCQuantizer.from_checkpoint(path)
    return KMeansQuantizer.from_torch(path)
