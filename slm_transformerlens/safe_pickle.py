"""Telling pickles apart from other files, and explaining a refused unpickle without torch's unsafe advice.

slm_transformerlens only loads torch files with ``torch.load(weights_only=True)`` and only unpickles a
joblib / pickle file when the user opts in. When torch refuses a file, its message suggests re-running
with ``weights_only=False``, which can execute code from the file; :func:`refusal_reason` keeps only the
reason (e.g. ``Unsupported global: GLOBAL pathlib.PosixPath``).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["PICKLE_SUFFIXES", "ZIP_MAGIC", "is_pickle_file", "refusal_reason"]

#: The first bytes of a zip archive (torch's default format since 1.6).
ZIP_MAGIC = b"PK\x03\x04"
#: File name endings that mark a (joblib) pickle.
PICKLE_SUFFIXES: tuple[str, ...] = (".pkl", ".pickle", ".joblib")
# joblib's compressed containers: zlib, gzip, bz2, xz, lzma, lz4
_JOBLIB_COMPRESSED = (b"\x78", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"]\x00\x00", b'\x04"M\x18')
_UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", re.DOTALL)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def is_pickle_file(path: str | Path) -> bool:
    """Whether ``path`` is a pickle (protocol 2-5, as joblib writes it uncompressed) or a compressed joblib file.

    A plain pickle is recognised by its bytes (``0x80`` then the protocol number); a compressed joblib
    container only with a pickle file name ending (:data:`PICKLE_SUFFIXES`), since zlib / gzip headers are
    common to many formats.
    """
    with Path(path).open("rb") as handle:
        head = handle.read(8)
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    return Path(path).suffix.lower() in PICKLE_SUFFIXES and head.startswith(_JOBLIB_COMPRESSED)


def refusal_reason(error: BaseException) -> str:
    """The reason torch's weights-only loader refused a file, without its advice to disable the check."""
    text = _ANSI.sub("", str(error))
    match = _UNPICKLER_REASON.search(text)
    if match:
        reason = " ".join(match.group(1).split())
        return f"it holds objects other than tensors ({reason})"
    first = " ".join(text.strip().splitlines()[0].split()) if text.strip() else type(error).__name__
    if "weights_only" in first or "Weights only" in first:
        return "it holds objects other than tensors"
    return f"it could not be read ({type(error).__name__}: {first[:200]})"
