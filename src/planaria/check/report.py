"""Readable reports of a check: a short explanation, a JSON summary, an HTML timeline."""

from __future__ import annotations

import html
from collections.abc import Hashable, Sequence
from typing import Any, Final

from planaria.check.history import Operation
from planaria.check.linearizability import CheckResult, PartitionResult, Verdict
from planaria.check.models import Model

__all__ = ["explain", "explain_partition", "render_html", "result_to_json"]

_STATES_SHOWN_MAX: Final = 8
_TIMELINE_OPS_MAX: Final = 400


def _op_line(model: Model, op: Operation) -> str:
    where = f"line {op.line}, " if op.line is not None else ""
    return f"process {op.process}: {model.describe_op(op)} ({where}{op.span()})"


def _states(model: Model, states: frozenset[Hashable]) -> str:
    shown = sorted(model.describe_state(s) for s in states)
    more = len(shown) - _STATES_SHOWN_MAX
    text = ", ".join(shown[:_STATES_SHOWN_MAX]) + (f", and {more} more" if more > 0 else "")
    return "{" + text + "}"


def explain_partition(model: Model, part: PartitionResult) -> str:
    """A few lines a person can follow: why this part is not linearizable."""
    key = "" if part.key is None else f"key {model.describe_state(part.key)}: "
    if part.verdict is Verdict.LINEARIZABLE:
        return f"{key}linearizable ({len(part.operations)} operations)"
    if part.verdict is Verdict.UNKNOWN:
        why = part.reason or f"the search ran out of time after {part.steps} steps"
        return f"{key}unknown ({len(part.operations)} operations): {why}"
    lines = [f"{key}not linearizable"]
    if part.reason is not None and part.blocked is not None:
        lines.append(f"  impossible operation: {_op_line(model, part.blocked)}")
        lines.append(f"  {part.reason}, so no order of the operations can return that")
        return "\n".join(lines)
    lines.append(
        f"  longest linearizable prefix: {len(part.prefix)} of {len(part.operations)} "
        f"operations; after it the value is {model.describe_state(part.state)}"
    )
    if part.blocked is not None:
        lines.append(f"  could not place next: {_op_line(model, part.blocked)}")
    if part.blocked is not None and part.explained:
        lines.append(
            f"  values possible while it was pending: {_states(model, part.blocked_states)}; "
            "in none of them does it both fit and let the rest of the history fit after it"
        )
    return "\n".join(lines)


def explain(model: Model, result: CheckResult) -> str:
    """The verdict, and for a non-linearizable history the failing part's explanation."""
    failing = result.failing
    if failing is not None:
        return explain_partition(model, failing)
    undecided = result.undecided
    if undecided is not None:
        return explain_partition(model, undecided)
    count = sum(len(p.operations) for p in result.partitions)
    parts = len(result.partitions)
    return f"linearizable ({count} operations in {parts} partition{'s' if parts != 1 else ''})"


def _op_json(model: Model, op: Operation) -> dict[str, Any]:
    return {
        "process": _jsonable(op.process),
        "op": model.describe_op(op),
        "line": op.line,
        "call": op.call,
        "return": op.ret,
    }


def _jsonable(value: Hashable) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def result_to_json(model: Model, result: CheckResult) -> dict[str, Any]:
    """A JSON-ready summary of a check."""
    payload: dict[str, Any] = {
        "verdict": str(result.verdict),
        "model": result.model,
        "partitions": len(result.partitions),
        "operations": sum(len(p.operations) for p in result.partitions),
        "steps": sum(p.steps for p in result.partitions),
        "explanation": explain(model, result),
    }
    failing = result.failing
    if failing is not None:
        payload["failing"] = {
            "key": _jsonable(failing.key),
            "prefix_length": len(failing.prefix),
            "state_after_prefix": _jsonable(failing.state),
            "blocked": None if failing.blocked is None else _op_json(model, failing.blocked),
            "possible_states": sorted(model.describe_state(s) for s in failing.blocked_states),
            "reason": failing.reason,
        }
    return payload


# --- HTML timeline ------------------------------------------------------------------------

_CSS: Final = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 2em; }
pre { background: #f6f6f6; padding: .8em; white-space: pre-wrap; }
.lane { font: 12px monospace; fill: #555; }
rect.op { stroke: #333; stroke-width: .5; rx: 3; }
rect.prefix { fill: #9fd89f; } rect.blocked { fill: #f08080; stroke-width: 2; }
rect.rest { fill: #d9d9d9; } rect.unknown { fill-opacity: .45; stroke-dasharray: 4 2; }
text.label { font: 10px monospace; fill: #111; pointer-events: none; }
.legend span { display: inline-block; padding: 2px 8px; margin-right: 6px; border-radius: 3px; }
"""

_LANE_PX: Final = 26
_WIDTH_PX: Final = 1100
_LEFT_PX: Final = 90


def _timeline_svg(model: Model, part: PartitionResult) -> str:
    ops = part.operations
    if not ops:
        return "<p>(no operations)</p>"
    note = ""
    if len(ops) > _TIMELINE_OPS_MAX:
        # The page stays small: the operations around the one that could not be placed.
        centre = part.blocked.call if part.blocked is not None else ops[-1].call
        nearest = sorted(ops, key=lambda op: abs(op.call - centre))[:_TIMELINE_OPS_MAX]
        ops = tuple(sorted(nearest, key=lambda op: op.index))
        note = (
            f"<p>The {len(ops)} operations called nearest the one that could not be placed, "
            f"of {len(part.operations)}.</p>\n"
        )
    order = {op.index: n for n, op in enumerate(part.prefix, start=1)}
    start = min(op.call for op in ops)
    known_ends = [op.ret for op in ops if op.ret is not None]
    end = max([*known_ends, *(op.call for op in ops)]) + 1
    scale = (_WIDTH_PX - _LEFT_PX - 10) / max(end - start, 1e-9)
    # Numbers in numeric order (2 before 10), then names.
    processes = sorted(
        {op.process for op in ops},
        key=lambda p: (0, p, "") if isinstance(p, int) else (1, 0, str(p)),
    )
    lane = {p: n for n, p in enumerate(processes)}
    height = len(processes) * _LANE_PX + 20
    parts = [f'<svg width="{_WIDTH_PX}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for process, n in lane.items():
        y = n * _LANE_PX + 17
        parts.append(f'<text class="lane" x="4" y="{y}">{html.escape(str(process))}</text>')
    for op in ops:
        x = _LEFT_PX + (op.call - start) * scale
        stop = end if op.ret is None else op.ret
        width = max((stop - op.call) * scale, 3.0)
        y = lane[op.process] * _LANE_PX + 4
        blocked = part.blocked is not None and op.index == part.blocked.index
        kind = "blocked" if blocked else "prefix" if op.index in order else "rest"
        classes = f"op {kind}" + ("" if op.known else " unknown")
        number = f"#{order[op.index]} " if op.index in order else ""
        title = html.escape(f"{number}{_op_line(model, op)}")
        parts.append(
            f'<g><title>{title}</title><rect class="{classes}" x="{x:.1f}" y="{y}" '
            f'width="{width:.1f}" height="{_LANE_PX - 8}"/>'
        )
        label = html.escape(f"{number}{model.describe_op(op)}")
        if width > 40:
            parts.append(f'<text class="label" x="{x + 3:.1f}" y="{y + 13}">{label}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return note + "\n".join(parts)


def render_html(title: str, sections: Sequence[tuple[str, Model, CheckResult]]) -> str:
    """A self-contained HTML page (inline SVG and CSS, no scripts) with one section per file:
    the verdict, the explanation and a timeline of the failing key's operations, one lane per
    process; the longest linearizable prefix is green and numbered in linearization order,
    the operation that could not be placed red, unknown outcomes dashed."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    body.append(
        '<p class="legend"><span style="background:#9fd89f">linearized prefix (#order)</span>'
        '<span style="background:#f08080">could not be placed</span>'
        '<span style="background:#d9d9d9">not reached</span> dashed: outcome unknown</p>'
    )
    for name, model, result in sections:
        body.append(f"<h2>{html.escape(name)}: {html.escape(str(result.verdict))}</h2>")
        body.append(f"<pre>{html.escape(explain(model, result))}</pre>")
        failing = result.failing
        if failing is not None:
            body.append(_timeline_svg(model, failing))
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
