"""Text that can leave the process as UTF-8.

Python decodes a file name that is not valid UTF-8 with each undecodable byte as a lone
surrogate (U+DC80-U+DCFF, PEP 383), so that the name still opens the file. Such a string
cannot be encoded as UTF-8: SQLite refuses it, and so does every JSON body, event stream and
model request it would go into. A workspace can hold such names (an archive unpacked, a file
written by a test), and any tool output, event or API answer can carry one.

`printable` shows each such byte as `\\xNN` (as `ls -b` and Python's `backslashreplace` do),
and any other lone surrogate as `\\uXXXX`; text without them is returned as it is, at the
cost of one `isascii` (or one encode, for text that is not ASCII). The daemon applies it where
text leaves: tool results (`Toolbox.call`), events (`EventLog`), the store's and the API's
JSON.
"""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as os.fsdecode keeps it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def encodable(text: str) -> bool:
    """Whether `text` encodes as UTF-8 (holds no lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def lone_surrogate(value: Any) -> str | None:
    """Where in a decoded JSON value a string holds a lone UTF-16 surrogate (which cannot be
    written, sent to a process or stored as UTF-8), or None."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if not encodable(item):
                return where or "the arguments"
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append((key, f"{where} (a key)" if where else "a key"))
                stack.append((child, f"{where}.{key}" if where else str(key)))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
    return None


def printable(text: str) -> str:
    """`text` with every lone surrogate written as an escape; `text` itself when it has none."""
    return text if encodable(text) else _SURROGATE.sub(_escape, text)


_BYTE_ESCAPE = re.compile(r"\\x([89a-f][0-9a-f])")


def from_printable(text: str) -> str:
    """`printable`'s escapes of undecodable bytes (\\x80-\\xff) turned back into the characters
    Python reads those bytes as: a name as a listing showed it, back to the name that opens
    the file."""
    return _BYTE_ESCAPE.sub(lambda match: chr(0xDC00 + int(match.group(1), 16)), text)


def printable_json(text: str) -> str:
    """JSON text (`json.dumps(..., ensure_ascii=False)`) with its strings `printable`: a lone
    surrogate can only be inside a string there, so it becomes the escape's JSON spelling."""
    if encodable(text):
        return text
    return _SURROGATE.sub(lambda match: _escape(match).replace("\\", "\\\\"), text)


def printable_value(value: Any) -> Any:
    """`printable` applied to every string (keys too) in a JSON-like value of dicts, lists and
    tuples; `value` itself when no string in it changes (nothing is copied then: the walk
    allocates nothing until it meets a string to change)."""
    if isinstance(value, str):
        return value if encodable(value) else _SURROGATE.sub(_escape, value)
    if isinstance(value, dict):
        for key, child in value.items():
            if _changes(key) or _changes(child):
                return {printable_value(k): printable_value(c) for k, c in value.items()}
        return value
    if isinstance(value, list | tuple):
        for child in value:
            if _changes(child):
                children = [printable_value(c) for c in value]
                return children if isinstance(value, list) else tuple(children)
        return value
    return value


def _changes(value: Any) -> bool:
    """Whether `printable_value` would change `value` (the common leaves answered inline)."""
    kind = type(value)
    if kind is str:
        return not (value.isascii() or encodable(value))
    if kind in _LEAVES:
        return False
    return printable_value(value) is not value


_LEAVES = frozenset({int, float, bool, type(None)})
