"""Build frozen dataclasses from TOML tables with errors that name the key.

Every config type in edgekd (profiles, targets, pass and backend options) goes through
``from_mapping`` so that an unknown key, a wrong type or a missing key is reported the same
way: file, key, what was expected, which keys exist.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from edgekd.errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if origin in (tuple, list):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin in (dict, Mapping):
        return "table"
    if dataclasses.is_dataclass(tp):
        return "table"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{value!r} is not allowed; choose one of {_type_name(tp)}", where=where)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:  # Optional[X]: report X's own, more specific, message
            return _convert(value, non_none[0], where)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"expected {_type_name(tp)}, got {value!r}", where=where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected {_type_name(tp)}, got {value!r}", where=where)
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a table, got {value!r}", where=where)
        args = get_args(tp)
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a table, got {value!r}", where=where)
        return from_mapping(tp, value, where=where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"expected a number, got {value!r}", where=where)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {value!r}", where=where)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {value!r}", where=where)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {value!r}", where=where)
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"expected {_type_name(tp)}, got {value!r}", where=where)


def from_mapping(cls: type[T], data: Mapping[str, Any], *, where: str) -> T:
    """Instantiate dataclass ``cls`` from ``data``, validating every key and type.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Opt:
    ...     threads: int = 2
    >>> from_mapping(Opt, {"threads": 4}, where="t.toml [options]")
    Opt(threads=4)
    >>> from_mapping(Opt, {"thread": 4}, where="t.toml [options]")
    Traceback (most recent call last):
    ...
    edgekd.errors.ConfigError: t.toml [options]: unknown key 'thread'; allowed keys: threads
      hint: did you mean 'threads'?
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    allowed = ", ".join(fields) or "(none)"
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            raise ConfigError(
                f"unknown key {key!r}; allowed keys: {allowed}",
                where=where,
                hint=f"did you mean {close[0]!r}?" if close else None,
            )
        kwargs[key] = _convert(value, hints[key], f"{where} {key}")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required key(s): {', '.join(missing)}; allowed keys: {allowed}", where=where)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ validation
        raise ConfigError(str(exc), where=where) from None


def to_mapping(obj: Any) -> Any:
    """Dataclass -> plain dict/list (TOML/JSON friendly), dropping None values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_mapping(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if getattr(obj, f.name) is not None
        }
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_mapping(v) for k, v in obj.items() if v is not None}
    return obj


def field_type(cls: type, keys: list[str], *, where: str) -> Any:
    """The type of the field ``keys`` names in dataclass ``cls`` (``["finetune", "lr"]`` reaches into a nested
    dataclass); an unknown key is the same error as in a file: the key, the allowed keys, the close match."""
    tp: Any = cls
    for i, key in enumerate(keys):
        tp = _unwrap_optional(tp)
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"{'.'.join(keys[:i])} is a {_type_name(tp)} value, not a table", where=where)
        fields = [f.name for f in dataclasses.fields(tp) if f.init]
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            raise ConfigError(f"unknown key {'.'.join(keys[: i + 1])!r}; allowed keys"
                              f"{' in ' + '.'.join(keys[:i]) if i else ''}: {', '.join(fields)}", where=where,
                              hint=f"did you mean {close[0]!r}?" if close else None)
        tp = typing.get_type_hints(tp)[key]
    return tp


def _unwrap_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        non_none = [a for a in get_args(tp) if a is not type(None)]
        if len(non_none) == 1:
            return non_none[0]
    return tp


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def parse_text(text: str, tp: Any, *, where: str) -> Any:
    """A command-line value (``--set KEY=TEXT``) parsed by the field's type: int, float, bool (true/false, yes/no,
    on/off, 1/0), str and Literal as written (``5`` for a str field is "5"), ``none`` for an optional field, a list
    as ``a,b`` or TOML ``["a", "b"]``. The result still goes through ``from_mapping`` like a file's value."""
    import tomllib

    text = text.strip()
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        if type(None) in get_args(tp) and text.lower() in ("none", "null"):
            return None
        inner = _unwrap_optional(tp)
        if inner is not tp:
            return parse_text(text, inner, where=where)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":  # a TOML string: 'hinton' or "a:b"
        text = text[1:-1] if origin not in (tuple, list) else text
    if tp is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ConfigError(f"expected true or false, got {text!r}", where=where)
    if tp is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            raise ConfigError(f"expected an integer, got {text!r}", where=where) from None
    if tp is float:
        try:
            return float(text.replace("_", ""))
        except ValueError:
            raise ConfigError(f"expected a number, got {text!r}", where=where) from None
    if tp is str or origin is Literal:
        return text
    if origin in (tuple, list):
        if text.startswith("["):
            try:
                return tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"not a TOML list: {exc}", where=where) from None
        args = get_args(tp)
        item = args[0] if args else str
        return [parse_text(part, item, where=where) for part in text.split(",") if part.strip()]
    try:  # a table or another type: the TOML value, checked by from_mapping
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
