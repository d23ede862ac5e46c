"""A brute-force linearizability checker for tiny histories: tries every order.

It shares nothing with the search but the model's ``step``: no partitioning (a state per
key), no memo, no reduction, no pre-check. Operations of unknown outcome may be left out;
reads of unknown outcome are tried like any other operation.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from planaria.check import Input, Operation
from planaria.check.models import Model


def brute_force_linearizable(model: Model, ops: Sequence[Operation]) -> bool:
    """Whether some order of ``ops`` respects real time and the model (exponential)."""
    assert len(ops) <= 12, "brute force is for tiny histories"
    return _extend(model, tuple(ops), {})


def _extend(model: Model, left: tuple[Operation, ...], state: dict[Hashable, Hashable]) -> bool:
    if all(not op.known for op in left):
        return True  # the rest may never have taken effect
    for op in left:
        # op may go next unless another pending operation returned before op was called
        if any(other.ret is not None and other.ret < op.call for other in left):
            continue
        current = state.get(op.key, model.init())
        legal, after = model.step(current, Input(op.f, op.value), op.output)
        if not legal:
            continue
        rest = tuple(other for other in left if other is not op)
        if _extend(model, rest, {**state, op.key: after}):
            return True
    return False
