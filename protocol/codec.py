"""The one module that calls msgpack.

Everything on a virnuc socket is a msgpack value restricted to what JSON can say:
nil, bool, int, float, str, list and map with str keys. Keeping to that subset means
``--json`` output never meets a value it cannot print and no peer ever needs ext
types. ``decode`` turns every way bytes can be wrong into one ``DecodeError`` so the
daemon has exactly one thing to catch before answering ``bad_request``.
"""

from collections.abc import Iterable
from typing import Any, NoReturn

import msgpack

from .constants import MAX_DEPTH, MAX_MESSAGE_SIZE
from .errors import DecodeError, EncodeError, ErrorCode

Buffer = bytes | bytearray | memoryview

_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = frozenset({list, dict})
_ALLOWED = _SCALARS | _CONTAINERS


_KIND_NAMES: dict[type, str] = {
    type(None): "nil",
    dict: "map",
    list: "list",
    tuple: "list",
    bytes: "bytes",
    bytearray: "bytes",
    memoryview: "bytes",
}


def kind_name(kind: type) -> str:
    """Name a type the way docs/protocol.md does (map, list, str, nil, ...)."""
    return _KIND_NAMES.get(kind, kind.__name__)


def type_name(value: object) -> str:
    """Name a value's type for error messages ("must be a map, got list")."""
    return kind_name(type(value))


def encode(obj: Any, max_size: int | None = None) -> bytes:
    """Pack ``obj`` (built from wire-safe values only) into one msgpack frame.

    The packed frame is decoded again before it is returned, so anything this
    function emits is something ``decode`` accepts; for control messages (a few
    hundred bytes) the check costs microseconds.

    Raises ``EncodeError``: ``internal`` for a value that is not wire-safe (a bug in
    the caller), ``too_large`` when the result exceeds ``max_size``, so the daemon
    can answer a huge reply with an error instead of a frame the client rejects.
    """
    try:
        data = msgpack.packb(obj, use_bin_type=True, datetime=False)
    except (TypeError, ValueError, OverflowError) as e:
        raise EncodeError(f"cannot encode message: {_describe(e)}") from e
    if max_size is not None and len(data) > max_size:
        raise EncodeError(
            f"message of {len(data)} bytes exceeds the limit of {max_size} bytes",
            ErrorCode.TOO_LARGE,
        )
    try:  # what we send must be what we accept: no bytes, int keys, deep nesting...
        decode(data, len(data))
    except DecodeError as e:
        raise EncodeError(f"cannot encode message: {e.message}") from e
    return data


def decode(data: Buffer, max_size: int = MAX_MESSAGE_SIZE) -> Any:
    """Unpack exactly one wire-safe msgpack value from ``data``.

    Every failure raises ``DecodeError`` (code ``too_large`` for over-size input,
    ``bad_request`` for everything else); nothing else escapes, whatever the bytes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type_name(data)}")
    if len(data) > max_size:
        raise DecodeError(
            f"message of {len(data)} bytes exceeds the limit of {max_size} bytes",
            ErrorCode.TOO_LARGE,
        )
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            object_pairs_hook=_unique_map,
            ext_hook=_no_ext,
            max_ext_len=0,
        )
    except DecodeError:
        raise
    except Exception as e:  # msgpack raises ValueError subclasses, TypeError, ...
        raise DecodeError(f"not a valid msgpack message: {_describe(e)}") from e
    _check_tree(obj)
    return obj


def decode_map(data: Buffer, max_size: int = MAX_MESSAGE_SIZE) -> dict[str, Any]:
    """``decode`` for messages that must be a map at top level (all of ours)."""
    obj = decode(data, max_size)
    if not isinstance(obj, dict):
        raise DecodeError(f"message must be a map, got {type_name(obj)}")
    return obj


def _unique_map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """Build a map, refusing duplicate keys (msgpack leaves them undefined)."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise DecodeError("map has duplicate keys")
    return result


def _no_ext(code: int, data: bytes) -> NoReturn:
    raise DecodeError(f"msgpack ext type {code} is not allowed")


def _describe(e: Exception) -> str:
    """msgpack's StackError and FormatError have empty messages."""
    return str(e) or type(e).__name__


def _check_tree(obj: Any) -> None:
    """Reject what msgpack accepts but the wire does not: bytes, ext, deep nesting.

    Walks level by level instead of recursing, because bounding the depth is the
    point. Type checks run through ``set(map(type, ...))`` so leaf containers cost
    C-speed; even a hostile 4 MiB payload takes well under a second, less than
    msgpack itself needs to build it.
    """
    if type(obj) not in _ALLOWED:
        _fail(f"values of type {type_name(obj)} are not allowed")
    level = [obj] if obj and type(obj) in _CONTAINERS else []
    depth = 1
    while level:
        if depth > MAX_DEPTH:
            _fail(f"message is nested deeper than {MAX_DEPTH} levels")
        children: list[Any] = []
        for container in level:
            children.extend(_container_children(container))
        level = children
        depth += 1


def _container_children(container: list[Any] | dict[Any, Any]) -> list[Any]:
    """Check one container's keys and values; return its non-empty sub-containers."""
    if type(container) is dict:
        bad_keys = set(map(type, container)) - {str}
        if bad_keys:
            _fail(f"map keys must be str, got {_names(bad_keys)}")
        values: Iterable[Any] = container.values()
    else:
        values = container
    kinds = set(map(type, values))
    if kinds <= _SCALARS:
        return []
    if not kinds <= _ALLOWED:
        _fail(f"values of type {_names(kinds - _ALLOWED)} are not allowed")
    return [v for v in values if v and type(v) in _CONTAINERS]


def _names(kinds: set[type]) -> str:
    return ", ".join(sorted(map(kind_name, kinds)))


def _fail(message: str) -> NoReturn:
    raise DecodeError(message)
