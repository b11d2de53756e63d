"""Reading a JSON object from a file with an error that names the file, what it is for, and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slm_transformerlens.errors import SLMError

__all__ = ["read_json_object"]

_JSON_KINDS: dict[type, str] = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true / false",
    type(None): "null",
}


def read_json_object(path: str | Path, *, what: str, error: type[SLMError], fix: str) -> dict[str, Any]:
    """The JSON object in ``path``.

    Args:
        path: the file.
        what: what the file is, e.g. ``"model config"`` (for the message).
        error: the package error class to raise.
        fix: what the user should do, appended to the message.

    Raises:
        error: the file is not UTF-8 JSON, or holds something other than an object.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise error(f"{what} {path} is not valid JSON ({problem}); {fix}") from None
    if not isinstance(data, dict):
        found = _JSON_KINDS.get(type(data), type(data).__name__)
        raise error(f"{what} {path} must hold a JSON object ({{...}}), not {found}; {fix}")
    return data
