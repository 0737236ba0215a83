"""Value checks of the config sections: a clear message naming the key and what is allowed."""

from __future__ import annotations

import numbers
import typing

import numpy


def check(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{key}={value!r} is invalid: allowed {allowed}")


def coerce(cls, name: str, value, key: str):
    """Check a value against its field's annotation; ints may arrive as integral floats."""
    hint = typing.get_type_hints(cls)[name]
    options = typing.get_args(hint) or (hint,)
    if value is None:
        check(type(None) in options, key, value, "a value (None is not allowed here)")
        return None
    # numbers.* also admit the numpy scalars that search libraries hand over.
    is_bool = isinstance(value, (bool, numpy.bool_))
    if bool in options:
        check(is_bool, key, value, "true or false")
        return bool(value)
    if int in options:
        ok = not is_bool and (isinstance(value, numbers.Integral) or (
            isinstance(value, numbers.Real) and float(value).is_integer()))
        check(ok, key, value, "an integer")
        return int(value)
    if float in options:
        check(isinstance(value, numbers.Real) and not is_bool, key, value, "a number")
        return float(value)
    check(isinstance(value, str), key, value, "a string")
    return value
