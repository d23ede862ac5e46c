"""Linearizability checker: the reference histories, then generated many-client histories
side by side with Porcupine.

1. The 64 reference histories (Jepsen etcd, Porcupine's kv c01/c10): median parse + check
   over a few runs against the anchor figure for Porcupine on them (0.7 s, given with the
   task), target at most 3x.
2. Generated kv and cas-register histories with 50 and 100 clients on 10 keys, linearizable
   and with each kind of injected violation (``planaria.check.generate``), written as JSON
   lines. Each file is checked in a fresh process (so its peak RSS is its own): the
   verdict must be right, the median parse + check under 2 s, the peak RSS under 500 MB.
   A hard set (100 clients on 10 keys, three seeds) has no time or memory target.
   With ``--porcupine PATH``, a driver built from Porcupine's public source that reads the
   same JSON-lines files (``PATH [-missing JSON] FILE...``, one JSON line per file with
   ``verdict`` and ``elapsed_s`` for read + parse + check; benchmarks/porcupine/main.go,
   built by ``benchmarks/porcupine/build.sh PORCUPINE_SOURCE``) checks each file too, and
   planaria must be within 3x of it, file by file (the two run in turn, one run each,
   ``--repeats`` times, so both see the same load). Without it the comparison is skipped,
   and the script says so. With ``--porcupine-kv DIR`` (``test_data/kv`` of a Porcupine
   checkout), Porcupine's own 50-client kv histories (EDN, missing keys read as "") are
   written as JSON lines and checked the same way, with the same targets.

    .venv/bin/python benchmarks/bench_check.py [--repeats N] [--porcupine PATH]
        [--porcupine-kv DIR]

It prints whether the checker ran compiled (mypyc, after ``make``) or as Python, and the
load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import write_results
from planaria import _native
from planaria.check import check_operations, default_model, parse_history
from planaria.check.generate import VIOLATIONS, HistorySpec, generate
from planaria.check.history import Event, event_line
from planaria.check.models import model_named

HISTORIES = Path(__file__).resolve().parents[1] / "tests" / "data" / "histories"
PORCUPINE_S = 0.7
TARGET_RATIO = 3.0
TARGET_FILE_S = 2.0
TARGET_FILE_MB = 500.0
# Each client has an operation pending half the time; with a key per 5 clients that is
# about 2.5 operations in flight on a key (the targets). The hard set puts 100 clients on
# 10 keys (5 in flight on a key, bursts of 15): no target but the ratio to Porcupine.
SPECS = [
    HistorySpec(
        model=model,
        clients=clients,
        keys=clients // 5,
        ops_per_client=40,
        concurrency=0.5,
        violation=violation,
        info_rate=0.02,
        seed=1,
    )
    for model in ("kv", "cas-register")
    for clients in (50, 100)
    for violation in (None, *VIOLATIONS)
]
HARD_SPECS = [
    HistorySpec(
        clients=100, keys=10, ops_per_client=40, violation=violation, info_rate=0.02, seed=seed
    )
    for seed in (1, 2, 3)
    for violation in (None, "stale-read")
]
# Porcupine's own kv histories (its test_data/kv), and what their keys read when missing.
PORCUPINE_KV = ("c50-ok", "c50-bad")
PORCUPINE_KV_MISSING = '""'


@dataclass(frozen=True)
class _Case:
    name: str
    events: tuple[Event, ...]
    model: str
    expected: str
    hard: bool = False  # no target but the ratio to Porcupine
    missing: str | None = None  # JSON of a missing key's value, when not the format's


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--porcupine",
        metavar="PATH",
        help="the Porcupine driver (benchmarks/porcupine/build.sh builds it)",
    )
    parser.add_argument(
        "--porcupine-kv", metavar="DIR", help="Porcupine's test_data/kv (see above)"
    )
    parser.add_argument("--one", nargs=2, metavar=("FILE", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--missing", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return _check_one(Path(args.one[0]), args.one[1], args.repeats, args.missing)
    variant = "compiled (mypyc)" if _native.compiled() else "Python (not compiled)"
    load = os.getloadavg()
    print(f"checker: {variant}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    reference = _reference(args.repeats)
    if reference is None:
        return 2
    generated = _generated(args.repeats, args.porcupine, args.porcupine_kv)
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    loads = {"load_average_before": list(load), "load_average_after": list(load_after)}
    write_results("check", {"reference": reference, "generated": generated, **loads})
    ok = reference["target_met"] and all(row["targets_met"] for row in generated["files"])
    return 0 if ok else 1


def _reference(repeats: int) -> dict[str, Any] | None:
    expected_path = HISTORIES / "expected.tsv"
    if not expected_path.exists():
        print(f"reference histories not found at {HISTORIES.resolve()}", file=sys.stderr)
        return None
    cases = [line.split("\t") for line in expected_path.read_text().splitlines() if line]
    texts = {rel: (HISTORIES / rel).read_text().splitlines() for rel, _ in cases}
    totals, check_totals = [], []
    per_file: dict[str, list[float]] = {rel: [] for rel, _ in cases}
    for _ in range(repeats):
        total = check_total = 0.0
        for rel, expected in cases:
            started = time.perf_counter()
            history = parse_history(texts[rel], path=rel)
            parsed = time.perf_counter()
            result = check_operations(default_model(history.format), history.operations)
            done = time.perf_counter()
            if str(result.verdict) != expected:
                print(f"WRONG VERDICT {rel}: {result.verdict} != {expected}", file=sys.stderr)
                return None
            total += done - started
            check_total += done - parsed
            per_file[rel].append(done - started)
        totals.append(total)
        check_totals.append(check_total)
    total_s, check_s = statistics.median(totals), statistics.median(check_totals)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    slowest = sorted(((statistics.median(v), k) for k, v in per_file.items()), reverse=True)
    print(f"1. {len(cases)} reference histories, {repeats} runs, medians:")
    print(f"  parse + check  {total_s:7.3f} s   ratio vs Porcupine {total_s / PORCUPINE_S:5.2f}x")
    print(f"  check only     {check_s:7.3f} s   ratio vs Porcupine {check_s / PORCUPINE_S:5.2f}x")
    print(f"  target {TARGET_RATIO:.0f}x ({TARGET_RATIO * PORCUPINE_S:.1f} s): ", end="")
    print("met" if total_s <= TARGET_RATIO * PORCUPINE_S else "MISSED")
    print(f"  peak RSS {peak_rss_mb:.1f} MiB")
    print("  slowest five (parse + check, median):")
    for seconds, rel in slowest[:5]:
        print(f"    {seconds * 1000:8.1f} ms  {rel}")
    return {
        "histories": len(cases),
        "repeats": repeats,
        "total_s_median": total_s,
        "check_only_s_median": check_s,
        "anchor_porcupine_s": PORCUPINE_S,
        "ratio_vs_porcupine": total_s / PORCUPINE_S,
        "target_met": total_s <= TARGET_RATIO * PORCUPINE_S,
        "peak_rss_mib": peak_rss_mb,
        "slowest_five_s": [[rel, seconds] for seconds, rel in slowest[:5]],
    }


def _cases(porcupine_kv: str | None) -> Iterator[_Case]:
    # One at a time: the files are checked in child processes, and a fork starts at the
    # parent's size.
    for hard, spec in [(False, s) for s in SPECS] + [(True, s) for s in HARD_SPECS]:
        history = generate(spec)
        name = (
            f"{'hard-' if hard else ''}{spec.model}-c{spec.clients}-k{spec.keys}"
            f"-s{spec.seed}-{spec.violation or 'ok'}.jsonl"
        )
        expected = "linearizable" if history.linearizable else "not-linearizable"
        yield _Case(name, history.events, spec.model, expected, hard)
    if porcupine_kv is None:
        print("  no Porcupine test data given (--porcupine-kv DIR): its c50 files are skipped")
        return
    for stem in PORCUPINE_KV:
        source = Path(porcupine_kv) / f"{stem}.txt"
        if not source.exists():
            print(f"  Porcupine's {source} not found: skipped")
            continue
        history = parse_history(source.read_text().splitlines(), path=str(source))
        expected = "linearizable" if stem.endswith("-ok") else "not-linearizable"
        missing = PORCUPINE_KV_MISSING
        yield _Case(f"porcupine-{stem}.jsonl", history.events, "kv", expected, False, missing)


def _generated(repeats: int, porcupine: str | None, porcupine_kv: str | None) -> dict[str, Any]:
    if porcupine is None:
        print("\n2. no Porcupine driver given (--porcupine PATH): planaria alone, no ratios")
    elif not Path(porcupine).exists():
        print(
            f"\n2. Porcupine driver {porcupine} not found (benchmarks/porcupine/build.sh "
            "builds it): planaria alone, no ratios"
        )
        porcupine = None
    else:
        print(f"\n2. side by side with the Porcupine driver {porcupine}")
    print(
        f"  generated histories, {repeats} runs each, medians; targets: right verdict, "
        f"< {TARGET_FILE_S:g} s, < {TARGET_FILE_MB:g} MB"
        + (f", <= {TARGET_RATIO:g}x Porcupine" if porcupine else "")
    )
    header = f"  {'file':44} {'verdict':17} {'planaria':>9} {'RSS MB':>7}"
    print(header + (f" {'Porcupine':>10} {'ratio':>6}" if porcupine else ""))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        for case in _cases(porcupine_kv):
            path = Path(tmp) / case.name
            path.write_text("".join(event_line(e) + "\n" for e in case.events))
            # One run of each in turn, so both see the same load on this shared machine.
            runs = [
                (
                    _run_one(path, case.model, 1, case.missing),
                    None if porcupine is None else _run_porcupine(porcupine, path, 1, case.missing),
                )
                for _ in range(repeats)
            ]
            ours = _merge([run[0] for run in runs])
            row: dict[str, Any] = {
                "file": case.name,
                "operations": sum(1 for e in case.events if e.type == "invoke"),
                "expected": case.expected,
                **ours,
            }
            met = ours["verdict"] == case.expected and (
                case.hard
                or (ours["median_s"] < TARGET_FILE_S and ours["peak_rss_mb"] < TARGET_FILE_MB)
            )
            row["hard"] = case.hard
            line = (
                f"  {case.name:44} {ours['verdict']:17} {ours['median_s']:8.3f}s "
                f"{ours['peak_rss_mb']:7.0f}"
            )
            if porcupine is not None:
                theirs = _merge([run[1] for run in runs if run[1] is not None])
                ratio = ours["median_s"] / theirs["median_s"]
                row.update(
                    porcupine_s=theirs["median_s"],
                    porcupine_verdict=theirs["verdict"],
                    ratio=ratio,
                )
                met = met and ratio <= TARGET_RATIO and theirs["verdict"] == case.expected
                line += f" {theirs['median_s']:9.3f}s {ratio:5.2f}x"
            row["targets_met"] = met
            print(line + ("" if met else "   MISSED"))
            rows.append(row)
    print("  targets:", "met on every file" if all(r["targets_met"] for r in rows) else "MISSED")
    return {"porcupine_driver": porcupine is not None, "repeats": repeats, "files": rows}


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    verdicts = {run["verdict"] for run in runs}
    return {
        "verdict": verdicts.pop() if len(verdicts) == 1 else "inconsistent",
        "median_s": statistics.median(run["median_s"] for run in runs),
        "peak_rss_mb": max(run.get("peak_rss_mb", 0.0) for run in runs),
    }


def _run_one(path: Path, model: str, repeats: int, missing: str | None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--one", str(path), model, "--repeats", str(repeats)]
    if missing is not None:
        command += ["--missing", missing]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _check_one(path: Path, model_name: str, repeats: int, missing: str | None) -> int:
    """In a fresh process: parse + check one file ``repeats`` times (a JSON line out)."""
    lines = path.read_text().splitlines()
    samples, verdict = [], ""
    for _ in range(repeats):
        started = time.perf_counter()
        history = parse_history(lines, path=str(path))
        if missing is None:
            model = default_model(history.format, model_name)
        else:
            model = model_named(model_name, missing=json.loads(missing))
        result = check_operations(model, history.operations)
        samples.append(time.perf_counter() - started)
        verdict = str(result.verdict)
    summary = {"verdict": verdict, "median_s": statistics.median(samples)}
    print(json.dumps({**summary, "peak_rss_mb": _own_peak_rss_mb()}))
    return 0


def _own_peak_rss_mb() -> float:
    """This process's peak RSS since its exec (ru_maxrss keeps the forking parent's)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # not Linux: the parent's size may be counted in too
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_porcupine(driver: str, path: Path, repeats: int, missing: str | None) -> dict[str, Any]:
    flags = [] if missing is None else ["-missing", missing]
    done = subprocess.run(
        [driver, *flags, *[str(path)] * repeats], capture_output=True, text=True, check=True
    )
    results = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    verdicts = {r["verdict"] for r in results}
    verdict = verdicts.pop() if len(verdicts) == 1 else "inconsistent"
    return {"verdict": verdict, "median_s": statistics.median(r["elapsed_s"] for r in results)}


if __name__ == "__main__":
    sys.exit(main())
