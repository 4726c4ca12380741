"""One small validator driven by type hints, shared by every message class.

Each message is declared once, as a frozen dataclass (what we parse and build) or a
TypedDict (result shapes); the field types *are* the schema. ``check_value`` walks a
type hint and a decoded value together, so adding a message never means writing a
validator, and every error names the offending field by its full path
(``args.chunk_length``) in the same words.

Supported hints: ``str``, ``int``, ``float``, ``bool``, ``Any``, ``X | None``,
``Literal[...]``, ``list[X]``, ``dict[str, X]``, ``StrEnum`` subclasses, nested
dataclasses and TypedDicts, and ``Annotated[X, Check(...)]`` for value constraints.

Conventions (documented in docs/protocol.md): a field with a default is optional and
may be absent or nil; unknown keys are rejected in messages we parse as commands
(``extra="forbid"``) and kept in results (``extra="keep"``) so a newer daemon can
add result fields without breaking older clients.
"""

import dataclasses
import enum
import functools
import os
import re
import types
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import (
    Annotated,
    Any,
    Literal,
    NoReturn,
    NotRequired,
    Required,
    Self,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from .codec import type_name
from .errors import ErrorCode, ProtocolError

Extra = Literal["forbid", "keep"]


@dataclass(frozen=True)
class Check:
    """A constraint on a value that already has the right type.

    ``test`` says whether the value is acceptable; ``expected`` completes the
    sentence "field 'x' must be ..." in the error message.
    """

    test: Callable[[Any], bool]
    expected: str


@dataclass(frozen=True)
class FieldSpec:
    """One field of a message: its wire name, type hint, and whether it is required."""

    name: str
    hint: Any
    required: bool


def _is_abs_path(value: str) -> bool:
    return os.path.isabs(value) and "\0" not in value


_SHA256 = re.compile(r"[0-9a-f]{64}")

NonEmptyStr = Annotated[str, Check(bool, "a non-empty string")]
AbsPath = Annotated[str, Check(_is_abs_path, "an absolute path")]
#: Counts, offsets and sizes are stored as SQLite integers (signed 64-bit), so larger
#: values (msgpack ints reach 2**64 - 1) are refused here, not by the database.
MAX_INT = 2**63 - 1
Count = Annotated[int, Check(lambda n: 0 <= n <= MAX_INT, "a non-negative int below 2**63")]
PositiveInt = Annotated[int, Check(lambda n: 0 < n <= MAX_INT, "a positive int below 2**63")]
Sha256Hex = Annotated[str, Check(lambda s: bool(_SHA256.fullmatch(s)), "64 lowercase hex digits")]


def fail(path: str, problem: str) -> NoReturn:
    """Raise the one kind of error validation produces, naming the field by path."""
    subject = f"field '{path}'" if path else "message"
    raise ProtocolError(ErrorCode.BAD_REQUEST, f"{subject} {problem}")


def short_repr(value: Any) -> str:
    """repr() cut to 60 characters: error messages echo what the peer sent."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


@functools.cache
def fields_of(cls: type) -> tuple[FieldSpec, ...]:
    """The wire fields of a dataclass or TypedDict, in declaration order."""
    hints = get_type_hints(cls, include_extras=True)
    if is_typeddict(cls):
        required = cls.__required_keys__  # type: ignore[attr-defined]  # TypedDict class
        return tuple(FieldSpec(n, _strip_required(h), n in required) for n, h in hints.items())
    # dataclasses.fields() already leaves out ClassVar discriminators.
    return tuple(
        FieldSpec(f.name, hints[f.name], _has_no_default(f)) for f in dataclasses.fields(cls)
    )


def _has_no_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _strip_required(hint: Any) -> Any:
    """TypedDict hints may be wrapped in NotRequired/Required; the key set says which."""
    return get_args(hint)[0] if get_origin(hint) in (NotRequired, Required) else hint


def check_fields(cls: type, data: Any, path: str, extra: Extra) -> dict[str, Any]:
    """Validate a map against ``cls``'s fields; return the checked, converted values.

    Absent and nil optional fields are left out of the result, so callers can apply
    defaults uniformly.
    """
    if not isinstance(data, dict):
        fail(path, f"must be a map, got {type_name(data)}")
    specs = fields_of(cls)
    out: dict[str, Any] = dict(data) if extra == "keep" else {}
    for spec in specs:
        value = data.get(spec.name)
        if value is not None:
            out[spec.name] = check_value(spec.hint, value, _join(path, spec.name))
        elif not spec.required:
            out.pop(spec.name, None)
        elif _allows_none(spec.hint):
            out[spec.name] = None
        else:
            fail(_join(path, spec.name), "is missing" if spec.name not in data else "is nil")
    if extra == "forbid":
        reject_unknown([s.name for s in specs], data, f"'{path}'" if path else "")
    return out


def reject_unknown(known: Collection[str], data: Mapping[str, Any], where: str) -> None:
    """Refuse keys outside ``known``, naming them all ("unknown fields in 'args': ...")."""
    unknown = sorted(set(data) - set(known))
    if unknown:
        names = ", ".join(short_repr(u) for u in unknown)
        plural = "s" if len(unknown) > 1 else ""
        location = f" in {where}" if where else ""
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown field{plural}{location}: {names}")


def _allows_none(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)


def check_value(hint: Any, value: Any, path: str) -> Any:
    """Check ``value`` against ``hint``; return it converted (enums, floats, classes)."""
    if hint is Any:
        return value
    origin = get_origin(hint)
    handler = _ORIGIN_HANDLERS.get(origin) if origin is not None else None
    if handler is not None:
        return handler(hint, value, path)
    if isinstance(hint, type):
        return _check_class(hint, value, path)
    raise TypeError(f"schema: unsupported type hint {hint!r} at {path}")


def _check_annotated(hint: Any, value: Any, path: str) -> Any:
    base, *metadata = get_args(hint)
    checked = check_value(base, value, path)
    for check in metadata:
        if isinstance(check, Check) and not check.test(checked):
            fail(path, f"must be {check.expected}, got {short_repr(value)}")
    return checked


def _check_union(hint: Any, value: Any, path: str) -> Any:
    options = [a for a in get_args(hint) if a is not type(None)]
    if value is None:
        return None
    if len(options) != 1:
        raise TypeError(f"schema: only 'X | None' unions are supported, got {hint!r}")
    return check_value(options[0], value, path)


def _check_literal(hint: Any, value: Any, path: str) -> Any:
    allowed = get_args(hint)
    if any(type(value) is type(a) and value == a for a in allowed):
        return value
    fail(path, f"must be {_one_of(allowed)}, got {short_repr(value)}")


def _one_of(allowed: tuple[Any, ...]) -> str:
    shown = [repr(a) for a in allowed]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def _check_list(hint: Any, value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        fail(path, f"must be a list, got {type_name(value)}")
    (item,) = get_args(hint) or (Any,)
    return [check_value(item, v, f"{path}[{i}]") for i, v in enumerate(value)]


def _check_dict(hint: Any, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        fail(path, f"must be a map, got {type_name(value)}")
    _, item = get_args(hint) or (str, Any)
    return {k: check_value(item, v, _join(path, k)) for k, v in value.items()}


_ORIGIN_HANDLERS: dict[Any, Callable[[Any, Any, str], Any]] = {
    Annotated: _check_annotated,
    Union: _check_union,
    types.UnionType: _check_union,
    Literal: _check_literal,
    list: _check_list,
    dict: _check_dict,
}


def _check_class(cls: type, value: Any, path: str) -> Any:
    if issubclass(cls, enum.Enum):
        return _check_enum(cls, value, path)
    if dataclasses.is_dataclass(cls):
        return cls(**check_fields(cls, value, path, "forbid"))
    if is_typeddict(cls):
        return check_fields(cls, value, path, "keep")
    return _check_scalar(cls, value, path)


def _check_enum(cls: type[enum.Enum], value: Any, path: str) -> enum.Enum:
    if isinstance(value, str):
        try:
            return cls(value)
        except ValueError:
            pass
    fail(path, f"must be {_one_of(tuple(m.value for m in cls))}, got {short_repr(value)}")


_SCALAR_NAMES = {str: "a str", int: "an int", bool: "a bool", float: "a number"}


def _check_scalar(cls: type, value: Any, path: str) -> Any:
    if cls is float and type(value) is int:
        return float(value)
    # type() rather than isinstance(): True must not pass as an int.
    if type(value) is not cls:
        fail(path, f"must be {_SCALAR_NAMES.get(cls, cls.__name__)}, got {type_name(value)}")
    return value


def dump(obj: Any) -> Any:
    """Turn a dataclass tree into wire values: maps, lists, enum values; None dropped."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        pairs = ((s.name, getattr(obj, s.name)) for s in fields_of(type(obj)))
        return {name: dump(value) for name, value in pairs if value is not None}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, list | tuple):
        return [dump(v) for v in obj]
    if isinstance(obj, dict):
        return {k: dump(v) for k, v in obj.items()}
    return obj


class WireModel:
    """Mixin for frozen dataclasses that travel as one msgpack map."""

    def to_wire(self) -> dict[str, Any]:
        """This message as a wire map (optional fields that are None are omitted)."""
        wire: dict[str, Any] = dump(self)
        return wire

    @classmethod
    def from_wire(cls, data: Any, path: str = "") -> Self:
        """Validate ``data`` (a decoded map) and build the message.

        Raises ``ProtocolError(bad_request)`` naming the first bad field, or listing
        every unknown field.
        """
        return cls(**check_fields(cls, data, path, "forbid"))
