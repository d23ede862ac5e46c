"""The lost-write check: acknowledged writes that a final read of every key contradicts.

Given a history and the final value of every key (read after all operations ended; a key
absent from ``final`` is missing), :func:`find_lost_writes` reports an acknowledged
operation W as lost only when no linearization that contains W can end in that final value.
It never reports a write that could legitimately have been overwritten, so it may miss
losses that a later write masks (linearizability checking finds those).

For each key, an operation O "may follow" W when it could take effect after W: it is not a
failed operation and it did not return before W was invoked (``O.ret < W.call`` is false,
and operations of unknown outcome may always follow).

- Acknowledged ``write``/``put``/``cas`` (which sets ``new``) and ``delete`` (which leaves the
  key missing): lost when the final value differs from the value W left, no operation that
  may follow W leaves the final value (a write/put of it, a cas setting it, a delete when the
  key is missing at the end), and no ``append`` may follow W (an append can build any value
  from W's, so then nothing is claimed). For keys written once ("unique-key writes") this is
  exact: an acknowledged write is lost if and only if its key does not end with its value.
- Acknowledged ``append`` of element v: lost when v is not in the final value (a substring of
  a final string, an element of a final list) and no ``write``/``put``/``cas``/``delete`` may
  follow it (those could have legitimately replaced the value).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from planaria.check.history import Operation

__all__ = ["LostWrite", "find_lost_writes"]

_REPLACING: Final = frozenset({"write", "put", "cas", "delete"})
_MUTATING: Final = _REPLACING | {"append"}


@dataclass(frozen=True, slots=True)
class LostWrite:
    """An acknowledged write the final state contradicts, and why."""

    op: Operation
    final: Hashable
    reason: str


def _leaves(op: Operation, missing: Hashable) -> Hashable:
    if op.f == "delete":
        return missing
    if op.f == "cas" and isinstance(op.value, tuple) and len(op.value) == 2:
        new: Hashable = op.value[1]
        return new
    return op.value


def _may_follow(other: Operation, op: Operation) -> bool:
    return other.index != op.index and (other.ret is None or other.ret >= op.call)


def _contains(final: Hashable, element: Hashable) -> bool:
    if isinstance(final, str) and isinstance(element, str):
        return element in final
    if isinstance(final, tuple):
        return element in final
    return final == element


def find_lost_writes(
    operations: Iterable[Operation], final: Mapping[Hashable, Hashable], *, missing: Hashable = None
) -> tuple[LostWrite, ...]:
    """Acknowledged writes contradicted by ``final`` (see the module docstring for the rules).

    ``missing`` is the value of a key absent from ``final`` and the value a delete leaves.
    """
    by_key: dict[Hashable, list[Operation]] = {}
    for op in operations:
        if op.f in _MUTATING:
            by_key.setdefault(op.key, []).append(op)
    lost: list[LostWrite] = []
    for key, ops in by_key.items():
        value = final.get(key, missing)
        for op in ops:
            if not op.known:
                continue
            followers = [o for o in ops if _may_follow(o, op)]
            if op.f == "append":
                if not _contains(value, op.value) and not any(o.f in _REPLACING for o in followers):
                    reason = "its element is not in the final value and nothing could replace it"
                    lost.append(LostWrite(op, value, reason))
                continue
            if _leaves(op, missing) == value or any(o.f == "append" for o in followers):
                continue
            if not any(_leaves(o, missing) == value for o in followers):
                reason = (
                    "the final value differs from what it wrote and no operation that may "
                    "follow it wrote the final value"
                )
                lost.append(LostWrite(op, value, reason))
    return tuple(lost)
