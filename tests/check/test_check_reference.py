"""Every reference history (Porcupine's test data) gets its known verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from planaria.check import check_operations, default_model, parse_history

HISTORIES = Path(__file__).resolve().parents[2] / "tests" / "data" / "histories"
EXPECTED = HISTORIES / "expected.tsv"


def _cases() -> list[tuple[str, str]]:
    if not EXPECTED.exists():
        return [("<missing>", "<missing>")]
    rows = [line.split("\t") for line in EXPECTED.read_text().splitlines() if line.strip()]
    return [(path, verdict) for path, verdict in rows]


def test_reference_folder_is_complete() -> None:
    assert EXPECTED.exists(), f"reference histories not found at {HISTORIES.resolve()}"
    assert len(_cases()) == 64


@pytest.mark.parametrize(("path", "expected"), _cases())
def test_reference_verdict(path: str, expected: str) -> None:
    assert EXPECTED.exists(), f"reference histories not found at {HISTORIES.resolve()}"
    history = parse_history((HISTORIES / path).read_text().splitlines(), path=path)
    result = check_operations(default_model(history.format), history.operations)
    assert str(result.verdict) == expected
