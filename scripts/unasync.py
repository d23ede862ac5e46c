#!/usr/bin/env python3
"""Generate the blocking client from the asyncio one, as httpcore does with its unasync script.

    python scripts/unasync.py          # rewrite src/planaria/client/_sync_client.py
    python scripts/unasync.py --check  # exit 1, showing the diff, when that file is stale

``src/planaria/client/_async_client.py`` (``AsyncClient``) is the only source of the two
clients' logic; ``_sync_client.py`` (``Client``) is this script's output, committed. The
rewrite is textual (standard library only): ``async``/``await`` dropped, and the names that
differ between the two worlds mapped (``AsyncPool`` -> ``Pool``, ``async_sleep`` -> ``sleep``,
``call_async`` -> ``call``, ...). What genuinely differs lives in the seams whose names it
maps (``client/_connection.py``, ``client/_waiting.py``). ``make lint`` runs ``--check``.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "planaria" / "client" / "_async_client.py"
TARGET = ROOT / "src" / "planaria" / "client" / "_sync_client.py"

GENERATED_DOC = '''\
# Generated from _async_client.py by scripts/unasync.py. Do not edit: edit the source and run
# `python scripts/unasync.py` (`make lint` fails while this file is out of date).
"""``Client``: the client's I/O around :class:`ClientCore`'s decisions, blocking and
thread-safe. Generated from ``AsyncClient`` (_async_client.py), which documents the design.
"""
'''
_MODULE_DOC = re.compile(r'\A""".*?"""\n', re.DOTALL)

# Whole phrases that read right in one world only. Each must occur in the source, so one
# left stale by an edit there fails loudly instead of leaking asyncio words into Client.
PHRASES = (
    (
        "An asyncio planaria client, for one event loop: ``Client``'s twin, with coroutines.",
        "A blocking planaria client, safe to share between threads.",
    ),
    ("import asyncio\n", ""),
    (
        "AsyncIterator, Awaitable, Callable, Iterable, Mapping",
        "Callable, Iterable, Iterator, Mapping",
    ),
)

# Then names, word by word, in this order.
TOKENS = (
    (r"\basync (def|for|with)\b", r"\1"),
    (r"\bawait ", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\basyncio\.sleep\b", "time.sleep"),
    (r"\basync_sleep\b", "sleep"),
    (r"\basync_gather\b", "gather"),
    (r"\bcall_async\b", "call"),
    (r"\bAwaitable\[object\]", "object"),
    (r"\bAsync([A-Z]\w*)", r"\1"),  # AsyncClient, AsyncPool, AsyncWriteGate, ...
)

# None of these may be left in the blocking client: a new asyncio construct in the source
# needs a rule above (or a seam) first.
LEFTOVERS = re.compile(
    r"\b(async|await|asyncio|Awaitable|Async\w*|__a(?:enter|exit|iter|next)__)\b"
)


class UnasyncError(Exception):
    """The source cannot be turned into the blocking client as it stands."""


def unasync(source: str) -> str:
    """The blocking client's module text for the asyncio client's ``source``."""
    text, found = _MODULE_DOC.subn("", source, count=1)  # the source's: about the source
    if not found:
        raise UnasyncError(f"{SOURCE.name} must start with its module docstring")
    for phrase, replacement in PHRASES:
        if phrase not in text:
            raise UnasyncError(f"{SOURCE.name} no longer contains {phrase!r}: update PHRASES")
        text = text.replace(phrase, replacement)
    for pattern, replacement in TOKENS:
        text = re.sub(pattern, replacement, text)
    leftovers = [
        f"line {number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), 1)
        if not line.lstrip().startswith("#") and LEFTOVERS.search(line)
    ]
    if leftovers:
        raise UnasyncError("asyncio left in the blocking client:\n  " + "\n  ".join(leftovers))
    return GENERATED_DOC + text


def stale_diff(source: Path = SOURCE, target: Path = TARGET) -> list[str]:
    """How ``target`` differs from what ``source`` generates (empty: up to date)."""
    expected = unasync(source.read_text())
    actual = target.read_text() if target.exists() else ""
    return list(
        difflib.unified_diff(
            actual.splitlines(keepends=True),
            expected.splitlines(keepends=True),
            f"{target.name} (committed)",
            f"{target.name} (generated from {source.name})",
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--check", action="store_true", help="fail if the committed file differs; write nothing"
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            diff = stale_diff()
            if diff:
                sys.stderr.writelines(diff)
                print(
                    f"\n{TARGET.relative_to(ROOT)} is not what {SOURCE.name} generates: it is "
                    "generated, never edited; run `python scripts/unasync.py`",
                    file=sys.stderr,
                )
                return 1
            return 0
        generated = unasync(SOURCE.read_text())
    except UnasyncError as error:
        print(f"unasync: {error}", file=sys.stderr)
        return 2
    if not TARGET.exists() or TARGET.read_text() != generated:
        TARGET.write_text(generated)
        print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
