"""Shared helpers for the benchmark scripts: repeated timing, medians, result files."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planaria import _native

RESULTS = Path(__file__).resolve().parents[1] / "bench-results"


def median_time_s(fn: Callable[[], object], repeats: int = 7) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs (the machine is shared and noisy)."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "compiled": _native.compiled(),  # the hot modules ran compiled (mypyc) or as Python
        **results,
    }
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    print(f"results: {path}")
    return path
