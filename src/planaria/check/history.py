"""The history model: events as recorded, and the operations they pair up into.

An :class:`Event` is one line of a history (an invocation or a completion). Pairing events
per process gives :class:`Operation` values, which is what the checkers work on.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

from planaria.errors import HistoryError

__all__ = [
    "COMPLETION_TYPES",
    "EVENT_TYPES",
    "UNKNOWN",
    "Event",
    "EventType",
    "Operation",
    "Unknown",
    "event_line",
    "freeze",
    "operations_from_events",
]

EventType = Literal["invoke", "ok", "fail", "info"]
EVENT_TYPES: Final = ("invoke", "ok", "fail", "info")
COMPLETION_TYPES: Final = ("ok", "fail", "info")


class Unknown:
    """The output of an operation whose outcome is unknown (``info`` or never completed)."""

    _instance: Unknown | None = None

    def __new__(cls) -> Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __reduce__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = Unknown()


_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


def freeze(value: Any) -> Hashable:
    """A hashable copy of a JSON-like value: lists become tuples, dicts sorted item tuples."""
    if type(value) in _SCALARS:
        return cast(Hashable, value)  # the common case, without the slow ABC check below
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, Hashable):
        return value
    raise TypeError(f"unhashable value {value!r}")


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a history.

    ``time`` is the moment the event happened (any unit, non-decreasing along the history);
    ``line`` is where it came from (1-based), for error messages and reports.
    """

    process: Hashable
    type: EventType
    f: str
    key: Hashable = None
    value: Hashable = None
    time: float = 0.0
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    """One invocation paired with its completion.

    ``output`` is the completion's value for ``ok`` operations and :data:`UNKNOWN` when the
    outcome is unknown (``info``, or no completion at all); then ``ret`` is ``None``: the
    operation may take effect at any moment after ``call``, or never.
    """

    index: int
    process: Hashable
    f: str
    key: Hashable
    value: Hashable
    output: Hashable
    call: float
    ret: float | None
    status: Literal["ok", "info"]
    line: int | None = field(default=None, compare=False)

    @property
    def known(self) -> bool:
        """Whether the operation certainly took effect (it was acknowledged)."""
        return self.status == "ok"

    def span(self) -> str:
        """Its interval as text, e.g. ``t=3..7`` or ``t=3..?``."""
        end = "?" if self.ret is None else _num(self.ret)
        return f"t={_num(self.call)}..{end}"


def event_line(event: Event) -> str:
    """The event as one JSON line of the ``.jsonl`` format (no newline)."""
    value = list(event.value) if isinstance(event.value, tuple) else event.value
    record = {
        "process": event.process,
        "type": event.type,
        "f": event.f,
        "key": event.key,
        "value": value,
        "time": round(event.time, 6),
    }
    return json.dumps(record)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def operations_from_events(
    events: Iterable[Event], *, path: str | None = None
) -> tuple[Operation, ...]:
    """Pair invocations with completions, per process, in history order.

    ``fail`` completions drop their operation (it certainly did not happen). ``info`` and
    missing completions give operations of unknown outcome. Raises :class:`HistoryError`
    for a completion without a pending invocation, an invocation while the same process
    still has one pending, a completion whose ``f`` differs from its invocation's, or time
    running backwards.
    """
    pending: dict[Hashable, tuple[int, Event]] = {}
    done: list[tuple[int, Event, Event | None]] = []
    last_time = float("-inf")
    for position, event in enumerate(events):
        if event.time < last_time:
            raise HistoryError(
                f"time goes backwards ({_num(event.time)} after {_num(last_time)})",
                path=path,
                line=event.line,
            )
        last_time = event.time
        if event.type == "invoke":
            if event.process in pending:
                earlier = pending[event.process][1]
                raise HistoryError(
                    f"process {event.process!r} invokes {event.f!r} while its {earlier.f!r} "
                    f"invoked at line {earlier.line} has not completed",
                    path=path,
                    line=event.line,
                )
            pending[event.process] = (position, event)
            continue
        if event.process not in pending:
            raise HistoryError(
                f"process {event.process!r} completes {event.f!r} ({event.type}) but has no "
                "pending invocation (it never started, or it completed already)",
                path=path,
                line=event.line,
            )
        position_invoked, invoke = pending.pop(event.process)
        if event.f != invoke.f:
            raise HistoryError(
                f"process {event.process!r} completes {event.f!r} but invoked {invoke.f!r} "
                f"at line {invoke.line}",
                path=path,
                line=event.line,
            )
        if event.type == "fail":
            continue
        completion = event if event.type == "ok" else None
        done.append((position_invoked, invoke, completion))
    for position_invoked, invoke in pending.values():
        done.append((position_invoked, invoke, None))
    done.sort(key=lambda item: item[0])
    return tuple(
        _operation(index, invoke, completion) for index, (_, invoke, completion) in enumerate(done)
    )


def _operation(index: int, invoke: Event, completion: Event | None) -> Operation:
    """The operation ``invoke`` started; ``completion`` is its ``ok``, or None when unknown."""
    return Operation(
        index=index,
        process=invoke.process,
        f=invoke.f,
        key=invoke.key,
        value=invoke.value,
        output=UNKNOWN if completion is None else completion.value,
        call=invoke.time,
        ret=None if completion is None else completion.time,
        status="info" if completion is None else "ok",
        line=invoke.line,
    )
