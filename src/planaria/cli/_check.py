"""``planaria check FILE...``: the I/O adapter around the pure checker.

Exit status: 0 when every file is linearizable, 1 when any file is not (a definite finding
wins over everything else), 2 when an answer is unknown (a time or memory limit stopped the
search: one line says which partition and why) or an input is bad. Never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planaria.check import default_model
from planaria.check.generate import VIOLATIONS, HistorySpec, generate
from planaria.check.history import event_line
from planaria.check.linearizability import (
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT_S,
    CheckResult,
    Verdict,
    check_operations,
)
from planaria.check.models import MODELS, Model
from planaria.check.parse import FORMATS, parse_history
from planaria.check.report import explain, render_html, result_to_json
from planaria.errors import HistoryError

__all__ = ["add_arguments", "run"]

EXIT_OK = 0
EXIT_NOT_LINEARIZABLE = 1
EXIT_UNKNOWN = 2
_DEFAULT_SPEC = HistorySpec()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="history files to check")
    parser.add_argument(
        "--model",
        choices=sorted(MODELS),
        default=None,
        help="the sequential model (default: cas-register for Jepsen logs, kv otherwise)",
    )
    parser.add_argument(
        "--format", choices=("auto", *FORMATS), default="auto", help="history format"
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="N",
        help=f"give up on a file after N s: unknown (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--memory-mb",
        type=float,
        default=DEFAULT_MEMORY_MB,
        metavar="N",
        help="give up on a partition whose search would hold more than N MB: unknown "
        f"(default {DEFAULT_MEMORY_MB:g})",
    )
    parser.add_argument(
        "--no-explain",
        dest="explain",
        action="store_false",
        help="skip the part of a violation's explanation that grows with the search "
        "(the values the blocked operation was tried in); the HTML is written only with --html",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    parser.add_argument("--html", metavar="FILE", help="write an HTML timeline report")
    generate = parser.add_argument_group(
        "generating histories (--generate: write each FILE instead of checking it)"
    )
    generate.add_argument(
        "--generate", action="store_true", help="write generated histories to the FILEs"
    )
    generate.add_argument("--clients", type=int, default=_DEFAULT_SPEC.clients, metavar="N")
    generate.add_argument("--keys", type=int, default=_DEFAULT_SPEC.keys, metavar="N")
    generate.add_argument(
        "--ops-per-client", type=int, default=_DEFAULT_SPEC.ops_per_client, metavar="N"
    )
    generate.add_argument(
        "--concurrency",
        type=float,
        default=_DEFAULT_SPEC.concurrency,
        metavar="F",
        help="share of time each client has an operation pending, in (0, 1]",
    )
    generate.add_argument(
        "--violation", choices=VIOLATIONS, default=None, help="inject one violation"
    )
    generate.add_argument(
        "--info-rate",
        type=float,
        default=_DEFAULT_SPEC.info_rate,
        metavar="F",
        help="share of writes whose outcome is unknown",
    )
    generate.add_argument(
        "--seed", type=int, default=_DEFAULT_SPEC.seed, help="the first FILE's seed; +1 each"
    )


def run(args: argparse.Namespace) -> int:
    if args.generate:
        return _generate(args)
    for flag, value in (("--timeout-s", args.timeout_s), ("--memory-mb", args.memory_mb)):
        if value <= 0:
            print(f"error: {flag} must be positive", file=sys.stderr)
            return EXIT_UNKNOWN
    sections: list[tuple[str, Model, CheckResult]] = []
    codes: list[int] = []
    with _ProgressBar() as report_progress:
        for name in args.files:
            code, payload, section = _check_file(name, args, report_progress)
            codes.append(code)
            if section is not None:
                sections.append(section)
            _print(payload, args.json)
    if args.html:
        try:
            Path(args.html).write_text(render_html("planaria check", sections))
        except OSError as error:
            print(f"error: cannot write {args.html}: {error.strerror}", file=sys.stderr)
            codes.append(EXIT_UNKNOWN)
    if EXIT_NOT_LINEARIZABLE in codes:
        return EXIT_NOT_LINEARIZABLE
    return max(codes, default=EXIT_OK)


def _check_file(
    name: str, args: argparse.Namespace, progress: Callable[[str, int, int], None]
) -> tuple[int, dict[str, Any], tuple[str, Model, CheckResult] | None]:
    started = time.perf_counter()
    try:
        lines = Path(name).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return _error(name, f"error: {name}: no such file")
    except (OSError, UnicodeDecodeError) as error:
        return _error(name, f"error: {name}: cannot read: {error}")
    try:
        history = parse_history(lines, format=args.format, path=name)
        model = default_model(history.format, args.model)
        result = check_operations(
            model,
            history.operations,
            clock=time.monotonic,
            timeout_s=args.timeout_s,
            memory_mb=args.memory_mb,
            progress=lambda done, total: progress(name, done, total),
            explain=args.explain,
        )
    except HistoryError as error:
        message = str(error) if error.path else f"{name}: {error}"
        return _error(name, f"error: {message}")
    except MemoryError:
        # The process ran out before the search's own estimate said so (a huge history, or
        # a tight ulimit): still an answer, not a traceback.
        return (
            EXIT_UNKNOWN,
            {
                "file": name,
                "verdict": "unknown",
                "text": f"{name}: unknown: out of memory (lower --memory-mb below what the "
                "process may use)",
            },
            None,
        )
    payload = {
        "file": name,
        "format": history.format,
        **result_to_json(model, result),
        "elapsed_s": round(time.perf_counter() - started, 6),
    }
    code = {
        Verdict.LINEARIZABLE: EXIT_OK,
        Verdict.NOT_LINEARIZABLE: EXIT_NOT_LINEARIZABLE,
        Verdict.UNKNOWN: EXIT_UNKNOWN,
    }[result.verdict]
    payload["text"] = f"{name}: {explain(model, result)}"
    return code, payload, (name, model, result)


def _generate(args: argparse.Namespace) -> int:
    for offset, name in enumerate(args.files):
        spec = HistorySpec(
            model=args.model or "kv",
            clients=args.clients,
            keys=args.keys,
            ops_per_client=args.ops_per_client,
            concurrency=args.concurrency,
            violation=args.violation,
            info_rate=args.info_rate,
            seed=args.seed + offset,
        )
        try:
            history = generate(spec)
            Path(name).write_text("".join(event_line(e) + "\n" for e in history.events))
        except HistoryError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_UNKNOWN
        except OSError as error:
            print(f"error: cannot write {name}: {error.strerror}", file=sys.stderr)
            return EXIT_UNKNOWN
        verdict = Verdict.LINEARIZABLE if history.linearizable else Verdict.NOT_LINEARIZABLE
        print(f"{name}: {len(history.events)} events, should be {verdict}")
    return EXIT_OK


def _error(name: str, message: str) -> tuple[int, dict[str, Any], None]:
    return EXIT_UNKNOWN, {"file": name, "verdict": "error", "error": message}, None


def _print(payload: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({k: v for k, v in payload.items() if k != "text"}, sort_keys=True))
    elif "error" in payload:
        print(payload["error"], file=sys.stderr)
    else:
        print(payload["text"])


class _ProgressBar:
    """A rich progress bar on stderr over each file's partitions, only when it is a TTY."""

    def __enter__(self) -> Callable[[str, int, int], None]:
        self._bar: Any = None
        if not sys.stderr.isatty():
            return lambda name, done, total: None
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(stderr=True), transient=True)
        self._bar.start()
        tasks: dict[str, Any] = {}

        def update(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = self._bar.add_task(f"checking {name}", total=total)
            self._bar.update(tasks[name], completed=done)

        return update

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
