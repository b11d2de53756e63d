"""Output folders that never overwrite a file the package did not write.

Every writer of a report (``write_lens_report``, ``compare_models``, ``slm-lens demo``, ``organism evaluate``)
claims the names it writes with :func:`claim_output_files` (before its long work) or :func:`output_path`
(at the write). A name is the package's when the folder's record (:data:`RECORD`, a JSON list of what
the package wrote there) or an ``slm-lens analyze`` run's manifest (its ``written`` list) names it; a file
of a claimed name that is neither is the user's, and the writer stops with an :class:`OutputError` naming
it, before anything is written. So the same command run again into its own folder overwrites its own
files, and a folder holding your ``report.md`` keeps it.

Names on the record whose files are gone (deleted since, or claimed by a command that stopped before
writing them) are dropped whenever another command updates the record, so a file you put there later is
yours.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from slm_transformerlens.errors import OutputError

__all__ = ["RECORD", "claim_output_files", "output_path", "prepare_output_folder", "written_files"]

#: The record of what the package wrote in a folder (a hidden JSON file in that folder).
RECORD = ".slm-lens-written.json"
_FORMAT = 1
_GLOB = set("*?[")
#: (folder, name) claimed by this process: kept on the record while their files are not yet written.
_CLAIMED: set[tuple[str, str]] = set()


def prepare_output_folder(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and check that files can be written in it, before any long work.

    Raises:
        OutputError: the folder cannot be created (a file in the way, no permission) or written to.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".slm-lens-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OutputError(
            f"cannot write to the output folder {out} ({error.strerror or error}); pass out_dir= a folder "
            "you can write to"
        ) from None
    return out


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _record(out: Path) -> set[str]:
    """The names on ``out``'s record (empty without one).

    Raises:
        OutputError: a file named :data:`RECORD` that is not a record of this package.
    """
    path = out / RECORD
    if not path.exists():
        return set()
    record = _read(path)
    if not isinstance(record, dict) or not isinstance(record.get("written"), list):
        raise OutputError(
            f"{path} is not a record of the files slm-lens wrote, so nothing in {out} is known to be the "
            "package's; move that file elsewhere, or pass another --out (out_dir=)"
        )
    return {str(name) for name in record["written"]}


def written_files(out_dir: str | Path) -> set[str]:
    """The names in ``out_dir`` that the package wrote: on its record or on an analyze run's ``written``
    list (``manifest.json``), as paths relative to the folder."""
    out = Path(out_dir)
    manifest = _read(out / "manifest.json") if (out / "manifest.json").is_file() else None
    run = manifest.get("written") if isinstance(manifest, dict) else None
    return _record(out) | ({str(name) for name in run} if isinstance(run, list) else set())


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def claim_output_files(out_dir: str | Path, names: Iterable[str], *, known: Iterable[str] = ()) -> Path:
    """Create ``out_dir`` and claim ``names`` in it for the package: refuse when one is the user's file.

    A name with ``*``, ``?`` or ``[`` is a pattern: every file it matches is checked, nothing is recorded
    (claim the file with :func:`output_path` when it is written). Other names are added to the record.
    ``known``: names the caller knows the package wrote (an older analyze run's report files).

    Returns:
        The folder.

    Raises:
        OutputError: the folder cannot be written, or a file of a claimed name exists that the package did
            not write (it is named, with the fix: another output folder, or move the file).
    """
    out = prepare_output_folder(out_dir)
    names = list(dict.fromkeys(names))
    exact = [n for n in names if not _GLOB & set(n)]
    patterns = [n for n in names if _GLOB & set(n)]
    ours = written_files(out) | set(known)
    present = {p.name for p in out.iterdir() if not p.is_dir()}
    clash = sorted(
        name
        for name in present | {n for n in exact if _exists(out / n)}
        if name not in ours
        and name != RECORD
        and (name in exact or any(fnmatch.fnmatchcase(name, p) for p in patterns))
    )
    if clash:
        shown = ", ".join(clash[:4]) + (f" and {len(clash) - 4} more" if len(clash) > 4 else "")
        raise OutputError(
            f"{out} holds {shown}, which slm-lens did not write and this command would overwrite; nothing "
            "was written: pass out_dir= another output folder, or move the file elsewhere"
        )
    if exact:
        folder = str(out.resolve())
        _CLAIMED.update((folder, n) for n in exact)
        record = {n for n in _record(out) if _exists(out / n) or (folder, n) in _CLAIMED} | set(exact)
        temporary = out / (RECORD + ".tmp")
        try:
            temporary.write_text(
                json.dumps({"format": _FORMAT, "written": sorted(record)}, indent=1), encoding="utf-8"
            )
            temporary.replace(out / RECORD)
        except OSError as error:
            raise OutputError(f"cannot write {out / RECORD} ({error.strerror or error})") from None
    return out


def output_path(out_dir: str | Path, name: str) -> Path:
    """The path of ``name`` in ``out_dir``, claimed for the package (:func:`claim_output_files`).

    Raises:
        OutputError: a file ``name`` exists there that the package did not write.
    """
    return claim_output_files(out_dir, [name]) / name
