"""Bounded text for values that came from a peer: for log lines and error messages.

``repr()`` of a decoded term is unsafe there: its size and cost follow the term's (a
9,600-digit bignum is a 9,600-character line; CPython refuses ``str()`` of an int beyond
4,300 digits with a ValueError), and it recurses once per level of nesting (a term nested
20,000 deep raises RecursionError inside the logging call). :func:`safe_repr` never raises,
never recurses, and costs O(``limit``) whatever the term's size or depth.

How it works: a walk over the term with an explicit stack of iterators (one per open
container), writing pieces until ``limit`` characters are out, then it stops and ends the
text with ``...``. Leaves are cut *before* they are formatted: a string or binary is sliced
to ``limit``, an integer too long to show is written as its bit length (``bit_length`` is
O(1); no decimal conversion). Builtin containers look as Python writes them. Other objects
(the term classes of :mod:`pyerl_node.proto.terms`, control messages) are shown by their
own ``repr`` when that is known to be short, i.e. when all their fields are small leaves (an
Atom, a Pid); else by their type name and fields (dataclasses, ``__slots__`` classes), or
as a mapping. This module imports nothing of the package: :mod:`pyerl_node.proto.errors`
uses it, and the term types themselves import the errors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from enum import Enum
from itertools import starmap
from typing import Final

__all__ = ["safe_repr"]

_ELLIPSIS: Final = "..."
# Integers up to this many bits (39 decimal digits) are written out; longer ones by size.
_INT_BITS: Final = 128
# What counts as a small leaf, for deciding that an object's own repr is short.
_SMALL_TEXT: Final = 255
_SMALL_FIELDS: Final = 8
_END: Final = object()


class _Pair:
    """A map entry: written as ``key: value``."""

    __slots__ = ("key", "value")

    def __init__(self, key: object, value: object) -> None:
        self.key = key
        self.value = value


# An open container: its remaining children, the text between two of them, its closing text.
_Frame = tuple[Iterator[object], str, str]


def safe_repr(value: object, limit: int = 200) -> str:
    """``value`` as text of at most ``max(limit, 8)`` characters, cut with ``...``."""
    limit = max(limit, 8)
    parts: list[str] = []
    size = 0
    stack: list[_Frame] = []
    first = True  # the next child is the first of its container (no separator before it)
    item = value
    try:
        while True:
            if not first:
                separator = stack[-1][1]
                parts.append(separator)
                size += len(separator)
            text, frame = _open(item, limit)
            parts.append(text)
            size += len(text)
            if frame is not None:
                stack.append(frame)
                first = True
            else:
                first = False
            # Move to the next child, closing every container that has none left.
            while stack and size <= limit:
                item = next(stack[-1][0], _END)
                if item is not _END:
                    break
                closer = stack.pop()[2]
                parts.append(closer)
                size += len(closer)
                first = False
            else:
                break
    except Exception:  # a hostile __repr__/__iter__ must not break the log line
        parts.append(f"<unprintable {_type_name(value)}>")
        size = limit + 1
    text = "".join(parts)
    if size > limit or len(text) > limit:
        return text[: limit - len(_ELLIPSIS)] + _ELLIPSIS
    return text


def _open(value: object, limit: int) -> tuple[str, _Frame | None]:
    """The text that starts ``value`` and, for a container, the frame of its children."""
    if value is None or value is True or value is False or isinstance(value, Enum):
        return repr(value), None
    if isinstance(value, int):
        bits = value.bit_length()
        if bits <= _INT_BITS:
            return repr(int(value)), None
        return f"<{'-' if value < 0 else ''}int of {bits} bits>", None
    if isinstance(value, float):
        return repr(float(value)), None
    if isinstance(value, str):
        return repr(str(value[: limit + 1])), None
    if isinstance(value, bytes | bytearray):
        return repr(bytes(value[: limit + 1])), None
    if isinstance(value, memoryview):
        return repr(value[: limit + 1].tobytes()), None
    if isinstance(value, _Pair):
        return "", (iter((value.key, value.value)), ": ", "")
    if isinstance(value, tuple):
        if not value:
            return "()", None
        return "(", (iter(value), ", ", ",)" if len(value) == 1 else ")")
    if isinstance(value, list):
        return "[", (iter(value), ", ", "]")
    if isinstance(value, dict):
        return "{", (starmap(_Pair, value.items()), ", ", "}")
    if isinstance(value, set | frozenset):
        if not value:
            return f"{type(value).__name__}()", None
        return "{", (iter(value), ", ", "}")
    if isinstance(value, Mapping):
        return f"{_type_name(value)}({{", (starmap(_Pair, value.items()), ", ", "})")
    fields = _fields(type(value))
    if fields is None:
        return f"<{_type_name(value)}>", None
    values = [getattr(value, name, None) for name in fields]
    if len(values) <= _SMALL_FIELDS and all(_small(v, 1) for v in values):
        return repr(value), None  # the fields are small: so is the object's own repr
    return f"{_type_name(value)}(", (iter(values), ", ", ")")


def _small(value: object, depth: int) -> bool:
    """A leaf of bounded size, or (``depth`` levels down) an object or tuple of such."""
    if value is None or isinstance(value, bool | float | Enum):
        return True
    if isinstance(value, int):
        return value.bit_length() <= _INT_BITS
    if isinstance(value, str | bytes):
        return len(value) <= _SMALL_TEXT
    if depth <= 0:
        return False
    if isinstance(value, tuple):
        return len(value) <= _SMALL_FIELDS and all(_small(v, depth - 1) for v in value)
    fields = _fields(type(value))
    return (fields is not None and len(fields) <= _SMALL_FIELDS
            and all(_small(getattr(value, name, None), depth - 1) for name in fields))


def _fields(cls: type) -> tuple[str, ...] | None:
    """The data fields of a dataclass or ``__slots__`` class, None for any other class."""
    known = _FIELDS.get(cls, _END)
    if known is not _END:
        return known  # type: ignore[return-value]
    names: tuple[str, ...] | None
    if dataclasses.is_dataclass(cls):
        names = tuple(f.name for f in dataclasses.fields(cls))
    else:
        # Only if every class but object declares __slots__ (else instances have a __dict__).
        slots: list[str] = []
        for klass in reversed(cls.__mro__[:-1]):
            declared = vars(klass).get("__slots__")
            if declared is None:
                slots = []
                break
            slots += [declared] if isinstance(declared, str) else list(declared)
        names = tuple(n for n in slots if n not in ("__weakref__", "__dict__")) or None
    if len(_FIELDS) >= _FIELDS_MAX:
        _FIELDS.clear()
    _FIELDS[cls] = names
    return names


# per class, its fields (see _fields)
_FIELDS: dict[type, tuple[str, ...] | None] = {}
_FIELDS_MAX: Final = 256


def _type_name(value: object) -> str:
    return type(value).__name__
