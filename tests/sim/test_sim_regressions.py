"""Replay every seed that ever failed (tests/sim/regressions.py)."""

from __future__ import annotations

import pytest

from planaria.sim.run import run_seed

from .regressions import REGRESSIONS, Regression


def _id(row: Regression) -> str:
    bugs = "+".join(row.bugs) or "no-bug"
    extra = "" if row.checks == "all" else f"-{row.checks}"
    if row.write_window is not None:
        extra += f"-window{row.write_window}"
    if row.nodes != Regression.nodes:
        extra += f"-nodes{row.nodes}"
    if row.fsync_max_ms is not None:
        extra += f"-fsync{row.fsync_max_ms:g}"
    if row.ttls:
        extra += f"-ttls{row.ttls}"
    return f"seed{row.seed}-ops{row.ops}-p{row.partitions}-{bugs}{extra}"


def _params() -> list[object]:
    params: list[object] = []
    for row in REGRESSIONS:
        marks = []
        if row.open_bug is not None:
            marks.append(pytest.mark.xfail(reason=row.open_bug, strict=True))
        params.append(pytest.param(row, id=_id(row), marks=marks))
    return params


@pytest.mark.parametrize("row", _params())
def test_regression_seed(row: Regression) -> None:
    result = run_seed(row.config())
    if row.expect is None:
        assert result.passed, f"{result.check}: {result.detail}\nreplay: {result.command}"
    else:
        assert not result.passed, f"{row.bugs} not caught by seed {row.seed}"
        assert result.check == row.expect, result.detail
