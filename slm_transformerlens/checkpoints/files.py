"""Finding and streaming the weight files of a checkpoint directory.

Reads the real Hugging Face layouts: ``model.safetensors``, sharded safetensors with
``model.safetensors.index.json``, ``pytorch_model.bin`` (and its sharded index). A torch
pickle is only ever opened with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from slm_transformerlens.errors import CheckpointError, MissingCheckpointFileError
from slm_transformerlens.jsonfile import read_json_object
from slm_transformerlens.safe_pickle import ZIP_MAGIC, refusal_reason

__all__ = [
    "WeightFiles",
    "find_weight_files",
    "iter_checkpoint_tensors",
    "peek_tensor_shape",
    "read_json",
    "scan_weights",
]

_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
}
_SHARD_NAME = re.compile(r"^(model|pytorch_model)-(\d+)-of-(\d+)\.(safetensors|bin)$")


def read_json(path: Path, *, what: str) -> dict[str, Any]:
    """Read a JSON file with an error that names the file and what it is for."""
    if not path.is_file():
        raise MissingCheckpointFileError(
            f"{what} not found: {path} does not exist. Is {path.parent} a checkpoint directory?"
        )
    return read_json_object(
        path, what=what, error=CheckpointError, fix="restore it from the original checkpoint"
    )


@contextmanager
def _safetensors_errors(path: Path) -> Iterator[None]:
    """Turn safetensors' errors on a damaged file into a CheckpointError naming the file."""
    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({error}); it is truncated or corrupt (an "
            "interrupted download?): download it again"
        ) from None


@dataclass(frozen=True)
class WeightFiles:
    """The weight files of a checkpoint, in reading order.

    Attributes:
        format: ``"safetensors"`` or ``"bin"`` (a torch pickle, read with ``weights_only=True``).
        files: the files to read.
        weight_map: for a sharded checkpoint, which file holds each tensor (from the index).
    """

    format: Literal["safetensors", "bin"]
    files: tuple[Path, ...]
    weight_map: dict[str, str] | None = None

    @property
    def total_bytes(self) -> int:
        """The summed size of the weight files on disk."""
        return sum(f.stat().st_size for f in self.files)


def find_weight_files(directory: Path) -> WeightFiles:
    """Locate the weights of a checkpoint directory, preferring safetensors.

    Raises:
        MissingCheckpointFileError: no weights at all, or a shard the index names is missing.
        CheckpointError: a shard on disk that the index does not name, or a malformed index.
    """
    for fmt, single, index in (
        ("safetensors", "model.safetensors", "model.safetensors.index.json"),
        ("bin", "pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        index_path = directory / index
        if index_path.is_file():
            return _sharded(directory, index_path, fmt)  # type: ignore[arg-type]
        if (directory / single).is_file():
            return WeightFiles(fmt, (directory / single,))  # type: ignore[arg-type]
        stray = sorted(
            p.name for p in directory.glob(f"*.{'safetensors' if fmt == 'safetensors' else 'bin'}")
        )
        stray = [name for name in stray if _SHARD_NAME.match(name)]
        if stray:
            raise MissingCheckpointFileError(
                f"{directory} has weight shards {stray[:3]}... but no {index}; the index tells which "
                "shard holds which tensor. Copy the index file from the original checkpoint."
            )
    raise MissingCheckpointFileError(
        f"no weights found in {directory}: expected model.safetensors, model.safetensors.index.json, "
        "pytorch_model.bin or pytorch_model.bin.index.json"
    )


def _sharded(directory: Path, index_path: Path, fmt: Literal["safetensors", "bin"]) -> WeightFiles:
    index = read_json(index_path, what="weight index")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path} has no 'weight_map'; it is not a Hugging Face weight index")
    names = sorted(set(weight_map.values()))
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        raise MissingCheckpointFileError(
            f"weight shard(s) {missing} named in {index_path.name} are missing from {directory}; "
            "the download is incomplete. Download the missing shards."
        )
    suffix = ".safetensors" if fmt == "safetensors" else ".bin"
    extra = sorted(
        p.name for p in directory.glob(f"*{suffix}") if _SHARD_NAME.match(p.name) and p.name not in names
    )
    if extra:
        raise CheckpointError(
            f"{directory} holds weight shard(s) {extra} that {index_path.name} does not name; they may "
            "come from another checkpoint. Remove them or restore the matching index."
        )
    return WeightFiles(fmt, tuple(directory / name for name in names), dict(weight_map))


def iter_checkpoint_tensors(weights: WeightFiles) -> Iterator[tuple[Path, dict[str, Tensor]]]:
    """Yield ``(file, {name: tensor})`` one file at a time, so only one shard is in memory.

    For an indexed checkpoint, every tensor must be in the file the index names.
    """
    for path in weights.files:
        if weights.format == "safetensors":
            from safetensors.torch import load_file

            with _safetensors_errors(path):
                tensors = load_file(str(path))
        else:
            tensors = _load_torch_state_dict(path)
            if not isinstance(tensors, dict):
                raise CheckpointError(f"{path} holds a {type(tensors).__name__}, not a state dict")
        if weights.weight_map is not None:
            misplaced = [k for k in tensors if weights.weight_map.get(k) not in (path.name, None)]
            if misplaced:
                raise CheckpointError(
                    f"{path.name} holds {misplaced[:3]} which the index places in other shards; "
                    "the shards and the index come from different checkpoints"
                )
        yield path, tensors


def _load_torch_state_dict(path: Path) -> Any:
    """``torch.load(weights_only=True)``: memory-mapped for the zip format, read whole for the legacy one."""
    with path.open("rb") as handle:
        zipped = handle.read(len(ZIP_MAGIC)) == ZIP_MAGIC
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as error:
        raise CheckpointError(
            f"{path} is not a plain torch state dict: {refusal_reason(error)}. slm_transformerlens only "
            "reads tensors (torch.load with weights_only=True) and never unpickles other objects. To "
            "convert it safely, load it once in an isolated environment you trust and save its tensors "
            "with safetensors.torch.save_file(state_dict, 'model.safetensors')."
        ) from None


def peek_tensor_shape(weights: WeightFiles, key: str) -> tuple[int, ...] | None:
    """The shape of tensor ``key`` without loading the weights (safetensors only; else ``None``)."""
    if weights.format != "safetensors":
        return None
    from safetensors import safe_open

    candidates = [weights.weight_map[key]] if weights.weight_map and key in weights.weight_map else None
    files = [f for f in weights.files if candidates is None or f.name in candidates]
    for path in files:
        with _safetensors_errors(path), safe_open(str(path), framework="pt") as handle:
            if key in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                return tuple(handle.get_slice(key).get_shape())
    return None


def scan_weights(
    weights: WeightFiles, rename: Callable[[str], str | None] = lambda key: key
) -> dict[str, Any]:
    """Parameter count and stored dtypes, read from the file headers (safetensors) or an mmap (bin).

    Tied output embeddings that a checkpoint stores twice are counted once, as in the model.
    """
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    if weights.format == "safetensors":
        from safetensors import safe_open

        for path in weights.files:
            with _safetensors_errors(path), safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                    tensor_slice = handle.get_slice(key)
                    stored = str(tensor_slice.get_dtype()).upper()
                    shapes[key] = (
                        tuple(tensor_slice.get_shape()),
                        _SAFETENSORS_DTYPES.get(stored, stored.lower()),
                    )
    else:
        for _, tensors in iter_checkpoint_tensors(weights):
            shapes.update(
                {k: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for k, t in tensors.items()}
            )
    n_params = 0
    dtypes: dict[str, int] = {}
    for key, (shape, dtype) in shapes.items():
        if rename(key) is None:
            continue
        count = 1
        for size in shape:
            count *= size
        n_params += count
        dtypes[dtype] = dtypes.get(dtype, 0) + count
    return {"n_params": n_params, "dtypes": dtypes, "n_tensors": len(shapes)}
