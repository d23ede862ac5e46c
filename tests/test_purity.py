"""The pure-core rule (docs/design.md §2): protocol logic is a deterministic state machine.

Pure modules import no asyncio, socket, time, threading (or other sources of I/O, real time
or concurrency), use no module-level ``random`` (only a seeded ``random.Random``), and never
call the built-in ``hash()``, which is randomized per process.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "planaria"

# Packages whose every module is pure, and single pure modules.
PURE_PACKAGES = ("core", "check", "sim")
PURE_MODULES = (
    "address.py",
    "hashing.py",
    "detect.py",
    # the storage logic the simulator drives on its in-memory file layer
    "storage/errors.py",
    "storage/format.py",
    "storage/fs.py",
    "storage/log.py",
    "storage/journal.py",
    "storage/persist.py",
    "storage/backup.py",
    # the coordination interface and the store the simulator's coordinator runs on
    "coord/errors.py",
    "coord/interface.py",
    "coord/layout.py",
    "coord/memory.py",
    "coord/types.py",
    # the chaos harness's schedule and result computation
    "chaos/schedule.py",
    "chaos/results.py",
)

FORBIDDEN_MODULES = {
    "asyncio",
    "concurrent",
    "datetime",
    "multiprocessing",
    "os",
    "selectors",
    "signal",
    "socket",
    "subprocess",
    "threading",
    "time",
}


def pure_files() -> list[Path]:
    files = [SRC / name for name in PURE_MODULES if (SRC / name).exists()]
    for package in PURE_PACKAGES:
        files.extend(sorted((SRC / package).rglob("*.py")))
    return files


def violations(source: str) -> list[str]:
    found: list[str] = []
    tree = ast.parse(source)
    random_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN_MODULES:
                    found.append(f"line {node.lineno}: import {alias.name}")
                if top == "random":
                    random_aliases.add(alias.asname or "random")
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            top = node.module.split(".")[0]
            if top in FORBIDDEN_MODULES:
                found.append(f"line {node.lineno}: from {node.module} import ...")
            if top == "random":
                for alias in node.names:
                    if alias.name != "Random":
                        found.append(f"line {node.lineno}: from random import {alias.name}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "hash"
        ):
            found.append(f"line {node.lineno}: call to built-in hash()")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in random_aliases
            and node.attr != "Random"
        ):
            found.append(f"line {node.lineno}: module-level random.{node.attr}")
    return found


def test_pure_modules_exist() -> None:
    # The rule must never pass vacuously.
    assert len(pure_files()) >= 2


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: p.relative_to(SRC).as_posix())
def test_module_is_pure(path: Path) -> None:
    assert violations(path.read_text()) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import time",
        "import asyncio",
        "from socket import socket",
        "import threading as t",
        "import os.path",
        "import random\nx = random.random()",
        "from random import choice",
        "x = hash('key')",
    ],
)
def test_checker_catches(snippet: str) -> None:
    assert violations(snippet) != []


@pytest.mark.parametrize(
    "snippet",
    ["import random\nrng = random.Random(7)", "from random import Random", "import math"],
)
def test_checker_allows(snippet: str) -> None:
    assert violations(snippet) == []
