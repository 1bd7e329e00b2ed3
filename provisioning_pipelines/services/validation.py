"""The checks every piece of outside text goes through before it is stored or acted on.

One home for "what a string from a client may be": PostgreSQL refuses NUL in text and JSON,
columns have lengths, and control characters in names end up in logs and file listings. A value
that fails is refused with ``InvalidRequest`` naming its field, before anything is made.

A pattern that checks an identifier is applied with ``fullmatch`` (never ``match`` with ``$``,
which also matches before a final newline, so a name with a trailing newline passed), and its
character classes are ASCII (``[0-9]``, not a digit class, which takes any script's digits).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from provisioning_pipelines.errors import InvalidRequest

# Control characters (Unicode's Cc: C0, DEL and C1) but tab, newline and carriage return, which
# are allowed in descriptions; single-line text refuses those and Unicode's line separators too.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LINE_BREAKS = re.compile(r"[\t\n\r\u2028\u2029]")
#: How deeply JSON a client sends may nest (bodies, custom schemas, webhook events).
MAX_DEPTH = 32


def text(value: Any, field: str, *, max_length: int, multiline: bool = False,
         required: bool = True) -> str | None:
    """``value`` if it is a string of at most ``max_length`` characters without NUL or other
    control characters (tabs and line breaks only where ``multiline``)."""
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{field}: expected a string, got {type_name(value)}", field=field)
    problem = text_problem(value, max_length=max_length, multiline=multiline)
    if problem is not None:
        raise InvalidRequest(f"{field}: {problem}", field=field)
    return value


def text_problem(value: str, *, max_length: int, multiline: bool = False) -> str | None:
    """Why ``value`` cannot be stored as text, or None."""
    if len(value) > max_length:
        return f"longer than {max_length} characters ({len(value)})"
    if "\x00" in value:
        return "contains a NUL character"
    if _CONTROL.search(value) or (not multiline and _LINE_BREAKS.search(value)):
        return "contains a control character"
    return None


def json_problem(value: Any, *, path: str = "", depth: int = 0) -> tuple[str, str] | None:
    """Where and why a parsed JSON value cannot be kept as it is (non-finite numbers, NUL,
    too deep): ``(field path, problem)``, or None. The path of the whole value is ``body``."""
    where = path or "body"
    if depth > MAX_DEPTH:
        return where, f"nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, float) and not math.isfinite(value):
        return where, f"{value} is not a finite number"
    if isinstance(value, str) and "\x00" in value:
        return where, "contains a NUL character"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if "\x00" in key:
                return where, "a key contains a NUL character"
            found = json_problem(item, path=f"{path}.{key}" if path else str(key)[:64],
                                 depth=depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = json_problem(item, path=f"{where}[{index}]", depth=depth + 1)
            if found:
                return found
    return None


def type_name(value: Any) -> str:
    """A value's JSON type, for messages: object, array, string, number, boolean, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__
