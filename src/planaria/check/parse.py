"""Parsers for history text: planaria's JSON lines, Jepsen log lines, EDN maps.

Every parser takes the text's lines (already read: no I/O here) and returns events; errors
are :class:`~planaria.errors.HistoryError` with the path and the 1-based line number.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal, cast

from planaria.check.history import EVENT_TYPES, Event, EventType, Operation, freeze
from planaria.check.history import operations_from_events as _pair
from planaria.errors import HistoryError

__all__ = [
    "FORMATS",
    "Format",
    "Keyword",
    "ParsedHistory",
    "detect_format",
    "parse_edn_value",
    "parse_events",
    "parse_history",
]

Format = Literal["jepsen-log", "edn", "jsonl"]
FORMATS: Final = ("jepsen-log", "edn", "jsonl")


class Keyword(str):
    """An EDN keyword such as ``:timed-out`` (kept apart from strings, printed with ``:``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f":{self}"


@dataclass(frozen=True, slots=True)
class ParsedHistory:
    """A parsed history: its format, its events and the operations they pair into."""

    format: Format
    events: tuple[Event, ...]
    operations: tuple[Operation, ...]


def parse_history(
    lines: Iterable[str], *, format: str = "auto", path: str | None = None
) -> ParsedHistory:
    """Parse a history's lines in ``format`` (or detect it) and pair its operations."""
    line_list = list(lines)
    chosen: Format = detect_format(line_list, path=path) if format == "auto" else _fmt(format)
    events = tuple(parse_events(line_list, format=chosen, path=path))
    return ParsedHistory(chosen, events, _pair(events, path=path))


def _fmt(name: str) -> Format:
    if name not in FORMATS:
        raise HistoryError(f"unknown history format {name!r}; expected one of {FORMATS}")
    return cast(Format, name)


_JEPSEN_LINE: Final = re.compile(r"\bjepsen\.util\s+-\s+")


def detect_format(lines: Sequence[str], *, path: str | None = None) -> Format:
    """The format of the first meaningful line: ``{"`` JSON, ``{:`` EDN, Jepsen log line."""
    for line in lines:
        text = line.strip()
        if not text:
            continue
        if text.startswith("{"):
            return "edn" if text[1:].lstrip().startswith(":") else "jsonl"
        if _JEPSEN_LINE.search(text):
            return "jepsen-log"
    raise HistoryError(
        "cannot tell the history format: no JSON object, EDN map or Jepsen log line found",
        path=path,
    )


def parse_events(lines: Iterable[str], *, format: Format, path: str | None = None) -> list[Event]:
    """Events of ``lines`` in the given format; times default to the line number."""
    parser = {"jepsen-log": _jepsen_event, "edn": _edn_event, "jsonl": _json_event}[format]
    events: list[Event] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = parser(line, number)
        except HistoryError as error:
            raise HistoryError(error.message, path=path, line=number) from None
        if event is not None:
            events.append(event)
    if format == "jsonl":
        return _fill_times(events, path)
    return events


def _fill_times(events: list[Event], path: str | None) -> list[Event]:
    # JSON events either all carry a time or none does; then line numbers are the times.
    untimed = [e for e in events if math.isnan(e.time)]
    if untimed and len(untimed) != len(events):
        odd = (
            untimed[0]
            if not math.isnan(events[0].time)
            else next(e for e in events if not math.isnan(e.time))
        )
        raise HistoryError("either every event has a time or none has", path=path, line=odd.line)
    if not untimed:
        return events
    return [replace(e, time=float(e.line or 0)) for e in events]


# --- Jepsen log lines ---------------------------------------------------------------------

_JEPSEN_EVENT: Final = re.compile(r"jepsen\.util\s+-\s+(\S+)\s+:(\S+)\s+:(\S+)\s*(.*?)\s*$")


def _jepsen_event(line: str, number: int) -> Event | None:
    if not _JEPSEN_LINE.search(line):
        return None  # other log lines (setup, nemesis chatter) are not events
    match = _JEPSEN_EVENT.search(line)
    if match is None:
        raise HistoryError(f"malformed Jepsen event line: {line.strip()!r}")
    process_text, type_text, f, value_text = match.groups()
    if process_text.startswith(":"):
        return None  # :nemesis and other non-client processes
    process = _int(process_text, "process")
    value = parse_edn_value(value_text) if value_text else None
    return Event(process, _event_type(type_text), f, None, value, float(number), number)


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise HistoryError(f"{what} must be an integer, got {text!r}") from None


def _event_type(text: str) -> EventType:
    if text not in EVENT_TYPES:
        raise HistoryError(f"event type must be one of {EVENT_TYPES}, got {text!r}")
    return cast(EventType, text)


# --- EDN maps -----------------------------------------------------------------------------


def _edn_event(line: str, number: int) -> Event | None:
    flat = _flat_edn_map(line)
    if flat is not None:
        fields = flat
    else:
        parsed = parse_edn_value(line)
        if not isinstance(parsed, tuple) or not all(
            isinstance(item, tuple) and len(item) == 2 for item in parsed
        ):
            raise HistoryError("expected an EDN map like {:process 0, :type :invoke, ...}")
        pairs = cast(tuple[tuple[Hashable, Hashable], ...], parsed)
        fields = {str(k): v for k, v in pairs}
    if isinstance(fields.get("process"), Keyword):
        return None  # :nemesis and other non-client processes
    return _event_from_fields(fields, number, time=float(number), keyword=True)


# A map of keyword keys to scalar values, the usual history line, read without the general
# parser's token stack (a third of the time); anything else goes to parse_edn_value.
_EDN_FLAT_PAIR: Final = re.compile(
    r"""[\s,]*:([^\s,\[\]{}()"]+)\s+("(?:[^"\\]|\\.)*"|[^\s,\[\]{}()"]+)"""
)


def _flat_edn_map(line: str) -> dict[str, Hashable] | None:
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    body, position, end = text[1:-1], 0, len(text) - 2
    fields: dict[str, Hashable] = {}
    while position < end:
        match = _EDN_FLAT_PAIR.match(body, position)
        if match is None:
            if body[position:].strip(" ,"):
                return None  # nested or malformed: the general parser decides
            break
        key, value = match.groups()
        if value.startswith('"'):
            fields[key] = json.loads(value) if "\\" in value else value[1:-1]
        else:
            fields[key] = _edn_atom(value)
        position = match.end()
    return fields


def _event_from_fields(
    fields: dict[str, Hashable], number: int, *, time: float, keyword: bool
) -> Event:
    for name in ("process", "type", "f"):
        if name not in fields:
            raise HistoryError(f"missing field {name!r}")
    process = fields["process"]
    if process is None or isinstance(process, bool | float):
        raise HistoryError(f"process must be an integer or a string, got {process!r}")
    type_value, f = fields["type"], fields["f"]
    if not isinstance(type_value, str) or (keyword and not isinstance(type_value, Keyword)):
        raise HistoryError(f"type must be one of {EVENT_TYPES}, got {type_value!r}")
    if not isinstance(f, str) or not f:
        raise HistoryError(f"f must be a non-empty name, got {f!r}")
    return Event(
        process,
        _event_type(str(type_value)),
        str(f),
        fields.get("key"),
        fields.get("value"),
        time,
        number,
    )


_EDN_TOKEN: Final = re.compile(
    r"""\s*(?:
        (?P<open>[\[{(])|(?P<close>[\]})])
       |(?P<string>"(?:[^"\\]|\\.)*")
       |(?P<atom>[^\s,\[\]{}()"]+)
    )[\s,]*""",
    re.VERBOSE,
)
_CLOSERS: Final = {"[": "]", "(": ")", "{": "}"}


def parse_edn_value(text: str) -> Hashable:
    """One EDN value: nil, booleans, numbers, strings, keywords, vectors, lists, maps.

    Vectors and lists become tuples; maps become tuples of ``(key, value)`` pairs.
    """
    stack: list[tuple[str, list[Hashable]]] = [("", [])]
    position = 0
    text = text.strip()
    while position < len(text):
        match = _EDN_TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise HistoryError(f"malformed EDN at column {position + 1}: {text!r}")
        position = match.end()
        if match["open"]:
            stack.append((match["open"], []))
        elif match["close"]:
            opener, items = stack.pop() if len(stack) > 1 else ("", [])
            if _CLOSERS.get(opener) != match["close"]:
                raise HistoryError(f"unbalanced {match['close']!r} in EDN: {text!r}")
            if opener == "{":
                if len(items) % 2:
                    raise HistoryError(f"EDN map with an odd number of forms: {text!r}")
                stack[-1][1].append(tuple(zip(items[::2], items[1::2], strict=True)))
            else:
                stack[-1][1].append(tuple(items))
        elif match["string"]:
            stack[-1][1].append(json.loads(match["string"]))
        else:
            stack[-1][1].append(_edn_atom(match["atom"]))
    if len(stack) != 1:
        raise HistoryError(f"unclosed {stack[-1][0]!r} in EDN: {text!r}")
    values = stack[0][1]
    if len(values) != 1:
        raise HistoryError(f"expected one EDN value, found {len(values)}: {text!r}")
    return values[0]


def _edn_atom(atom: str) -> Hashable:
    if atom == "nil":
        return None
    if atom in ("true", "false"):
        return atom == "true"
    if atom.startswith(":") and len(atom) > 1:
        return Keyword(atom[1:])
    try:
        return int(atom)
    except ValueError:
        pass
    try:
        number = float(atom)
    except ValueError:
        raise HistoryError(f"unsupported EDN atom {atom!r}") from None
    if not math.isfinite(number):
        raise HistoryError(f"unsupported EDN number {atom!r}")
    return number


# --- JSON lines ---------------------------------------------------------------------------


_JSON: Final = json.JSONDecoder()  # json.loads without its per-call checks
_SCAN: Final = _JSON.scan_once  # type: ignore[attr-defined]  # one value at an index
_EVENT_TYPE_SET: Final = frozenset(EVENT_TYPES)
_LISTS: Final = (list, dict)


def _json_event(line: str, number: int) -> Event:
    # The common case at C speed: one JSON object whose fields need no more checks; anything
    # else goes through json.loads and _event_from_fields for the exact error.
    text = line.strip()
    try:
        raw, end = _SCAN(text, 0)
    except (StopIteration, ValueError):
        end = -1
    if end != len(text):
        try:
            raw = _JSON.decode(line)
        except json.JSONDecodeError as error:
            raise HistoryError(f"invalid JSON: {error.msg} at column {error.colno}") from None
    if type(raw) is not dict:
        raise HistoryError("expected a JSON object per line")
    time = raw.get("time", math.nan)  # NaN: no time given; filled in by _fill_times
    if "time" in raw and (type(time) not in (int, float) or not math.isfinite(time)):
        raise HistoryError(f"time must be a finite number, got {time!r}")
    key, value = raw.get("key"), raw.get("value")
    try:  # the only fields that may hold lists or objects
        if type(key) in _LISTS:
            raw["key"] = key = freeze(key)
        if type(value) in _LISTS:
            raw["value"] = value = freeze(value)
    except TypeError as error:
        raise HistoryError(str(error)) from None
    process, type_value, f = raw.get("process"), raw.get("type"), raw.get("f")
    if (
        type(process) in (int, str)
        and type(type_value) is str
        and type_value in _EVENT_TYPE_SET
        and type(f) is str
        and f
    ):
        return Event(process, type_value, f, key, value, float(time), number)  # type: ignore[arg-type]
    return _event_from_fields(raw, number, time=float(time), keyword=False)
