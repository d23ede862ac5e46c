"""Frames between nodes (and between nodes and the coordinator): length-prefixed msgpack.

A frame is a 4-byte big-endian payload length, then the payload: one message as msgpack.
A message is any registered frozen dataclass (every one in ``core.messages`` by default),
written as ``[tag, field, field, ...]`` with nested dataclasses the same way; tuples and
frozensets travel as arrays, bytes stay bytes (msgpack bin), enums as their values.

Decoding is type-directed: every field is checked against its annotation (an ``int`` field
takes no bool or str, a ``bytes`` field no str, a ``Message`` field only the message tags),
so bytes from a peer become exactly the dataclass they claim to be, or a :class:`FrameError`
(never another exception, never a half-built message). Frames longer than
``frame_bytes_max`` are refused from their header, before their payload is buffered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import struct
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeAlias

import msgpack  # type: ignore[import-untyped]

from planaria.core import messages as m
from planaria.errors import PeerError, UsageError

__all__ = [
    "CODEC",
    "FRAME_BYTES_MAX",
    "Codec",
    "FrameDecoder",
    "FrameError",
    "read_frame",
]

FRAME_BYTES_MAX = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")

_Encode: TypeAlias = Callable[[Any], Any]
_Decode: TypeAlias = Callable[[Any], Any]


class FrameError(PeerError):
    """A peer sent bytes that are not a valid frame or message (a protocol error): drop
    the connection; nothing in it was applied."""


def _fail(expected: str, value: object) -> FrameError:
    return FrameError(f"protocol error: expected {expected}, got {type(value).__name__}")


def _scalar(kind: type) -> tuple[_Encode, _Decode]:
    def decode(value: Any) -> Any:
        # bool is an int subclass: an int field must not take True.
        if type(value) is not kind:
            raise _fail(kind.__name__, value)
        return value

    return (lambda value: value), decode


def _scalars(kinds: tuple[type, ...]) -> tuple[_Encode, _Decode]:
    """A union of scalar types (``int | bytes``): msgpack keeps each apart, as it is."""
    allowed = frozenset(kinds)
    names = " | ".join(kind.__name__ for kind in kinds)

    def decode(value: Any) -> Any:
        if type(value) not in allowed:
            raise _fail(names, value)
        return value

    return (lambda value: value), decode


def _decode_float(value: Any) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise _fail("float", value)


def _as_list(value: Any, expected: str) -> list[Any]:
    if type(value) is not list:
        raise _fail(expected, value)
    return value


class Codec:
    """Encodes and decodes the registered dataclasses (``tags``: tag -> class)."""

    def __init__(self, tags: Mapping[int, type], *, frame_bytes_max: int = FRAME_BYTES_MAX):
        if frame_bytes_max < 16:
            raise UsageError("frame_bytes_max must be >= 16")
        self.frame_bytes_max = frame_bytes_max
        self._tags = dict(tags)
        self._tag_of: dict[type, int] = {}
        for tag, cls in self._tags.items():
            if not dataclasses.is_dataclass(cls) or cls in self._tag_of:
                raise UsageError(f"tag {tag}: {cls!r} is not a dataclass, or is registered twice")
            self._tag_of[cls] = tag
        self._fields: dict[type, tuple[tuple[str, _Encode, _Decode], ...]] = {}
        self._scalar_kinds: dict[type, tuple[type | None, ...]] = {}
        for cls in self._tags.values():
            self._fields_of(cls)
        # Per class, an encoder and a field decoder compiled to straight-line code: the hot
        # messages (Append, AppendReply) cross the bus for every write.
        self._encoders = {cls: self._build_encoder(cls) for cls in self._fields}
        self._decoders = {cls: self._build_decoder(cls) for cls in self._fields}

    @property
    def tags(self) -> Mapping[int, type]:
        return dict(self._tags)

    def extend(self, tags: Mapping[int, type]) -> Codec:
        """A codec that also knows ``tags`` (e.g. the runtime's own coordinator messages)."""
        clash = set(tags) & set(self._tags)
        if clash:
            raise UsageError(f"tags already in use: {sorted(clash)}")
        return Codec({**self._tags, **tags}, frame_bytes_max=self.frame_bytes_max)

    # -- compiling per-type encoders and decoders from the annotations

    def _fields_of(self, cls: type) -> tuple[tuple[str, _Encode, _Decode], ...]:
        compiled = self._fields.get(cls)
        if compiled is None:
            hints = typing.get_type_hints(cls)
            names = [f.name for f in dataclasses.fields(cls)]
            compiled = tuple((name, *self._compile(hints[name])) for name in names)
            self._fields[cls] = compiled
            self._scalar_kinds[cls] = tuple(
                hints[name] if hints[name] in (int, str, bytes, bool) else None for name in names
            )
        return compiled

    def _compile(self, tp: Any) -> tuple[_Encode, _Decode]:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if tp in (int, str, bytes, bool):
            return _scalar(tp)
        if tp is float:
            return (lambda value: value), _decode_float
        if tp is type(None):
            return (lambda value: value), _scalar(type(None))[1]
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return self._compile_enum(tp)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            return self._compile_dataclasses((tp,))
        if origin in (types.UnionType, typing.Union):
            return self._compile_union(args)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return self._compile_sequence(args[0], tuple, "array")
        if origin is tuple:
            return self._compile_fixed_tuple(args)
        if origin is frozenset:
            return self._compile_sequence(args[0], frozenset, "array")
        if origin is list:
            return self._compile_sequence(args[0], list, "array")
        raise UsageError(f"frame: cannot encode fields of type {tp!r}")

    def _compile_enum(self, tp: type[enum.Enum]) -> tuple[_Encode, _Decode]:
        def decode(value: Any) -> Any:
            try:
                return tp(value)
            except (ValueError, TypeError):
                raise FrameError(f"protocol error: {value!r} is not a {tp.__name__}") from None

        return (lambda value: value.value), decode

    def _compile_union(self, args: tuple[Any, ...]) -> tuple[_Encode, _Decode]:
        optional = type(None) in args
        rest = tuple(arg for arg in args if arg is not type(None))
        if all(isinstance(arg, type) and dataclasses.is_dataclass(arg) for arg in rest):
            inner_encode, inner_decode = self._compile_dataclasses(rest)
        elif len(rest) == 1:
            inner_encode, inner_decode = self._compile(rest[0])
        elif all(arg in (int, str, bytes) for arg in rest):
            inner_encode, inner_decode = _scalars(rest)
        elif sum(typing.get_origin(arg) is tuple for arg in rest) == 1 and all(
            arg in (int, str, bytes) or typing.get_origin(arg) is tuple for arg in rest
        ):
            inner_encode, inner_decode = self._compile_scalars_or_tuple(rest)
        else:
            raise UsageError(f"frame: cannot encode a union of {args!r}")
        if not optional:
            return inner_encode, inner_decode

        def encode(value: Any) -> Any:
            return None if value is None else inner_encode(value)

        def decode(value: Any) -> Any:
            return None if value is None else inner_decode(value)

        return encode, decode

    def _compile_scalars_or_tuple(self, args: tuple[Any, ...]) -> tuple[_Encode, _Decode]:
        """Scalars or one tuple type (``int | bytes | tuple[bytes | None, ...]``, a reply's
        result): msgpack keeps an array apart from the scalars."""
        sequence = next(arg for arg in args if typing.get_origin(arg) is tuple)
        scalar_encode, scalar_decode = _scalars(tuple(arg for arg in args if arg is not sequence))
        tuple_encode, tuple_decode = self._compile(sequence)

        def encode(value: Any) -> Any:
            return tuple_encode(value) if isinstance(value, tuple) else scalar_encode(value)

        def decode(value: Any) -> Any:
            return tuple_decode(value) if isinstance(value, list) else scalar_decode(value)

        return encode, decode

    def _compile_dataclasses(self, classes: tuple[type, ...]) -> tuple[_Encode, _Decode]:
        for cls in classes:
            if cls not in self._tag_of:
                raise UsageError(f"frame: {cls.__name__} is used in a field but not registered")
        allowed = {self._tag_of[cls]: cls for cls in classes}
        names = " | ".join(cls.__name__ for cls in classes)
        return self._encode_dataclass, lambda value: self._decode_dataclass(value, allowed, names)

    def _compile_sequence(
        self, item: Any, build: Callable[[Iterator[Any]], Any], expected: str
    ) -> tuple[_Encode, _Decode]:
        item_encode, item_decode = self._compile(item)
        if build is frozenset:

            def encode(value: Any) -> Any:
                # Sorted, so equal sets encode to equal bytes.
                return sorted(item_encode(x) for x in value)
        else:

            def encode(value: Any) -> Any:
                return [item_encode(x) for x in value]

        def decode(value: Any) -> Any:
            return build(item_decode(x) for x in _as_list(value, expected))

        return encode, decode

    def _compile_fixed_tuple(self, args: tuple[Any, ...]) -> tuple[_Encode, _Decode]:
        compiled = [self._compile(arg) for arg in args]

        def encode(value: Any) -> Any:
            return [enc(x) for (enc, _), x in zip(compiled, value, strict=True)]

        def decode(value: Any) -> Any:
            items = _as_list(value, f"array of {len(compiled)}")
            if len(items) != len(compiled):
                raise FrameError(
                    f"protocol error: expected {len(compiled)} items, got {len(items)}"
                )
            return tuple(dec(x) for (_, dec), x in zip(compiled, items, strict=True))

        return encode, decode

    def _build_encoder(self, cls: type) -> Callable[[Any], list[Any]]:
        fields = self._fields[cls]
        kinds = self._scalar_kinds[cls]
        scope: dict[str, Any] = {}
        parts = [str(self._tag_of[cls])]
        for position, ((name, encode, _), kind) in enumerate(zip(fields, kinds, strict=True)):
            if kind is None:
                scope[f"e{position}"] = encode
                parts.append(f"e{position}(value.{name})")
            else:
                parts.append(f"value.{name}")
        source = f"def encode(value):\n    return [{', '.join(parts)}]\n"
        exec(source, scope)  # generated from the dataclass fields only
        encoder: Callable[[Any], list[Any]] = scope["encode"]
        return encoder

    def _build_decoder(self, cls: type) -> Callable[[list[Any]], Any]:
        """``decode(items)``: the message from ``[tag, field, ...]`` (tag already checked)."""
        fields = self._fields[cls]
        kinds = self._scalar_kinds[cls]
        scope: dict[str, Any] = {"cls": cls, "FrameError": FrameError, "_fail": _fail}
        lines = [
            "def decode(items):",
            f"    if len(items) != {len(fields) + 1}:",
            f"        raise FrameError('protocol error: {cls.__name__} has {len(fields)} "
            "fields, got %d' % (len(items) - 1))",
        ]
        for position, ((_, _, decode), kind) in enumerate(zip(fields, kinds, strict=True)):
            item = f"items[{position + 1}]"
            if kind is None:
                scope[f"d{position}"] = decode
                lines.append(f"    v{position} = d{position}({item})")
            else:
                # bool is an int subclass: an int field must not take True.
                scope[f"k{position}"] = kind
                lines += [
                    f"    v{position} = {item}",
                    f"    if type(v{position}) is not k{position}:",
                    f"        raise _fail({kind.__name__!r}, v{position})",
                ]
        arguments = ", ".join(f"v{position}" for position in range(len(fields)))
        lines += [
            "    try:",
            f"        return cls({arguments})",
            "    except (TypeError, ValueError) as exc:",
            f"        raise FrameError('protocol error: bad {cls.__name__}: %s' % exc) from None",
        ]
        exec("\n".join(lines) + "\n", scope)  # generated from the fields only
        decoder: Callable[[list[Any]], Any] = scope["decode"]
        return decoder

    def _encode_dataclass(self, value: Any) -> list[Any]:
        encoder = self._encoders.get(type(value))
        if encoder is None:
            raise UsageError(f"frame: {type(value).__name__} is not a registered message type")
        return encoder(value)

    def _decode_dataclass(self, value: Any, allowed: Mapping[int, type], expected: str) -> Any:
        items = _as_list(value, expected)
        if not items or type(items[0]) is not int or items[0] not in allowed:
            shown = items[0] if items and type(items[0]) is int else "?"
            raise FrameError(f"protocol error: expected {expected}, got tag {shown}")
        return self._decoders[allowed[items[0]]](items)

    # -- the public API

    def encode(self, message: object) -> bytes:
        """The msgpack payload of ``message`` (no length prefix)."""
        try:
            payload: bytes = msgpack.packb(self._encode_dataclass(message), use_bin_type=True)
        except (OverflowError, TypeError, ValueError) as exc:
            raise UsageError(f"frame: cannot encode {type(message).__name__}: {exc}") from exc
        return payload

    def decode(self, payload: bytes) -> Any:
        """The message in ``payload``; FrameError if it is not exactly one valid message."""
        try:
            value = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True)
        except Exception as exc:
            # msgpack raises many kinds (ExtraData, FormatError, StackError, ValueError, ...).
            raise FrameError(f"protocol error: bad msgpack: {exc}") from None
        return self._decode_dataclass(value, self._tags, "a message")

    def frame(self, message: object) -> bytes:
        """``message`` as one frame: length prefix and payload."""
        payload = self.encode(message)
        if len(payload) > self.frame_bytes_max:
            raise UsageError(
                f"frame of {len(payload)} bytes exceeds frame_bytes_max {self.frame_bytes_max}"
            )
        return _HEADER.pack(len(payload)) + payload

    def frame_length(self, header: bytes) -> int:
        """The payload length announced by a 4-byte header; FrameError if over the limit."""
        (length,) = _HEADER.unpack(header)
        if length > self.frame_bytes_max:
            raise FrameError(
                f"protocol error: frame of {length} bytes exceeds {self.frame_bytes_max}"
            )
        return int(length)


class FrameDecoder:
    """Incremental (sans-I/O) frame reader: ``feed`` bytes, then take the messages from
    ``messages()``. Holds at most one partial frame (bounded by ``frame_bytes_max``)."""

    def __init__(self, codec: Codec) -> None:
        self._codec = codec
        self._buf = bytearray()
        self._need: int | None = None  # payload length of the frame being read

    def feed(self, data: bytes) -> None:
        self._buf += data

    def messages(self) -> Iterator[Any]:
        """Every complete message fed so far, in order; raises FrameError on bad input."""
        offset = 0
        try:
            while True:
                if self._need is None:
                    if len(self._buf) - offset < _HEADER.size:
                        return
                    header = bytes(self._buf[offset : offset + _HEADER.size])
                    self._need = self._codec.frame_length(header)
                    offset += _HEADER.size
                if len(self._buf) - offset < self._need:
                    return
                payload = bytes(self._buf[offset : offset + self._need])
                offset += self._need
                self._need = None
                yield self._codec.decode(payload)
        finally:
            del self._buf[:offset]


async def read_frame(reader: asyncio.StreamReader, codec: Codec) -> Any:
    """Read one message from a stream; FrameError on bad input, IncompleteReadError at EOF."""
    length = codec.frame_length(await reader.readexactly(_HEADER.size))
    return codec.decode(await reader.readexactly(length))


CODEC = Codec(
    {
        1: m.Version,
        2: m.Get,
        3: m.Set,
        4: m.Delete,
        5: m.ClientRequest,
        6: m.ClientReply,
        7: m.Entry,
        8: m.PartitionConfig,
        9: m.Append,
        10: m.AppendReply,
        11: m.ConfigUpdate,
        12: m.Persist,
        13: m.Send,
        14: m.Reply,
        15: m.ProposeIsr,
        16: m.Ready,
        17: m.SnapshotChunk,
        18: m.SnapshotAck,
        19: m.IncrBy,
        20: m.IncrByFloat,
        21: m.AppendTo,
        22: m.SetRange,
        23: m.MSet,
        24: m.Expire,
        25: m.ClearExpiry,
        26: m.GetEx,
        27: m.ExpireKeys,
        28: m.GetExpiry,
        29: m.HashSet,
        30: m.HashDelete,
        31: m.HashIncrBy,
        32: m.HashIncrByFloat,
        33: m.SetAdd,
        34: m.SetRemove,
        35: m.SetPop,
        36: m.SetStore,
        37: m.ValueRead,
        38: m.Rename,
    }
)
