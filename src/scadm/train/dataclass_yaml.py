"""A YAML mapping -> a typed dataclass, checking every key and value against its type hints.

Why hand-written: the configs are plain dataclasses (scadm.train.config) with a handful of field
types (int, float, bool, str, dict, fixed-length tuples, X | None); a schema library would be a
new dependency for about seventy lines. Errors are InputErrors naming the file and the dotted key.
"""

from __future__ import annotations

import types
import typing
from dataclasses import fields, is_dataclass

from scadm.errors import InputError


def build_dataclass(cls, raw, where: str, source: str):
    """Dataclass `cls` from mapping `raw`; nested dataclass fields from nested mappings. Unknown
    keys and wrongly typed values are InputErrors naming `source` and the dotted key (`where`
    is the prefix of `cls`'s keys, "" at the top)."""
    if not isinstance(raw, dict):
        raise InputError(f"{source}: {where or 'the file'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    for key in raw:
        if key not in names:
            raise InputError(f"{source}: unknown key '{where}{key}' (allowed: {', '.join(sorted(names))})")
    values = {}
    for key, value in raw.items():
        kind = hints[key]
        if is_dataclass(kind):
            values[key] = build_dataclass(kind, value or {}, f"{where}{key}.", source)
        else:
            values[key] = _coerce(value, kind, f"{where}{key}", source)
    return cls(**values)


def _coerce(value, kind, name: str, source: str):
    """`value` as type `kind` (int, float, bool, str, dict, tuple[float, ...], X | None)."""
    bad = InputError(f"{source}: {name} must be {_describe(kind)}, got {value!r}")
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, name, source)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad
        return tuple(_coerce(v, a, name, source) for v, a in zip(value, args, strict=True))
    if kind is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if kind is float:
        # YAML 1.1 reads 2e-6 (no dot) as a string; accept it as the number it is.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise bad
        return value
    if kind is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    raise TypeError(f"unsupported config type {kind}")  # a bug in the dataclass being read


def _describe(kind) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return f"a list of {len(args)} numbers"
    return {type(None): "null", dict: "a mapping"}.get(kind, f"a {getattr(kind, '__name__', kind)}")
