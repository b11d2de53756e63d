"""Checks of ``slm-lens organism evaluate``'s input folders, before any model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

from slm_transformerlens.errors import SLMError

__all__ = ["OrganismInputError", "check_evaluation_inputs"]


class OrganismInputError(SLMError, ValueError):
    """A folder the organism commands read is missing or incomplete."""


def check_evaluation_inputs(models_dir: str | Path, data_dir: str | Path) -> list[Path]:
    """The checkpoints under ``models_dir``, after checking that ``data_dir`` holds what they need.

    Returns:
        The checkpoint folders (``models_dir/<name>/config.json``), sorted by name.

    Raises:
        OrganismInputError: a folder that does not exist, no checkpoint under ``models_dir``, or a
            ``data_dir`` without ``corpus.json`` or the ``units_<kind>.npz`` / ``.json`` a checkpoint reads.
    """
    models, data = Path(models_dir), Path(data_dir)
    build_fix = (
        "pass --data the folder `slm-lens organism build` wrote (default out/organism/data), or the "
        "shipped evaluation data (slm_transformerlens/data/organism/eval)"
    )
    if not models.is_dir():
        raise OrganismInputError(
            f"models folder {models} does not exist; pass --models the folder `slm-lens organism train` "
            "wrote (default out/organism/models), or slm_transformerlens/data/organism for the shipped ones"
        )
    checkpoints = sorted(p.parent for p in models.glob("*/config.json"))
    if not checkpoints:
        raise OrganismInputError(
            f"no checkpoint under {models} (no <name>/config.json); pass --models the folder "
            "`slm-lens organism train` wrote, or run `slm-lens organism train` first"
        )
    if not data.is_dir():
        raise OrganismInputError(f"data folder {data} does not exist; {build_fix}")
    if not (data / "corpus.json").is_file():
        raise OrganismInputError(f"data folder {data} has no corpus.json; {build_fix}")
    for checkpoint in checkpoints:
        try:
            config = json.loads((checkpoint / "config.json").read_text())
        except (OSError, ValueError) as error:
            raise OrganismInputError(f"{checkpoint / 'config.json'} cannot be read ({error})") from None
        organism = config.get("organism") if isinstance(config, dict) else None
        kind = (organism or {}).get("unit_kind", "kmeans")
        missing = [n for n in (f"units_{kind}.npz", f"units_{kind}.json") if not (data / n).is_file()]
        if missing:
            raise OrganismInputError(
                f"data folder {data} lacks {missing}, the {kind!r} renderings that checkpoint "
                f"{checkpoint.name} is evaluated on; {build_fix}"
            )
    return checkpoints
