"""The architecture's import rules (docs/architecture.md), checked at run time.

tests/test_purity.py reads each pure module's own import lines; this test follows indirect
imports too: it imports each module in a fresh interpreter and looks at ``sys.modules``
afterwards, so a rule broken three imports away (a package ``__init__`` that loads the
client, a storage package that loads the committer's threads) fails here.

Each layer lists the planaria modules its members may load (anything else of planaria is a
violation) and the outside modules they must not load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Loaded by ``import planaria`` itself: the lazy front, the compiled-module guard, the errors.
FRONT = frozenset({"planaria", "planaria._lazy", "planaria._native", "planaria.errors"})
TOOLKIT = (
    "planaria.address",
    "planaria.hashing",
    "planaria.retry",
    "planaria.breaker",
    "planaria.detect",
)
# Outside modules that belong to I/O, real concurrency or the network clients and servers.
IO_MODULES = frozenset(
    {
        "asyncio",
        "concurrent",
        "multiprocessing",
        "selectors",
        "signal",
        "socket",
        "subprocess",
        "threading",
    }
)
# Third-party packages only the runtime adapters use.
OPTIONAL = frozenset({"uvloop", "kazoo", "matplotlib", "redis"})
ADAPTER_DEPS = frozenset({"hiredis", "msgpack", "rich", "prometheus_client"}) | OPTIONAL
PURE_FORBIDDEN = IO_MODULES | ADAPTER_DEPS

STORAGE_PURE = frozenset(
    {
        "planaria.storage",
        *(
            f"planaria.storage.{name}"
            for name in (
                "errors",
                "format",
                "fs",
                "identity",
                "log",
                "journal",
                "persist",
                "backup",
            )
        ),
    }
)
COORD_PURE = frozenset(
    {
        "planaria.coord",
        *(
            f"planaria.coord.{name}"
            for name in ("errors", "interface", "layout", "memory", "types")
        ),
    }
)
CHAOS_PURE = frozenset({"planaria.chaos", "planaria.chaos.schedule", "planaria.chaos.results"})


def under(*packages: str) -> Callable[[str], bool]:
    """Matches each package and everything inside it."""
    return lambda name: any(name == p or name.startswith(p + ".") for p in packages)


def one_of(names: frozenset[str]) -> Callable[[str], bool]:
    return lambda name: name in names


@dataclass(frozen=True)
class Layer:
    name: str
    members: Callable[[str], bool]
    may_load: tuple[Callable[[str], bool], ...]  # planaria modules allowed besides FRONT
    forbidden: frozenset[str]  # top-level names of outside modules never loaded

    def violations(self, loaded: set[str]) -> list[str]:
        found = []
        for name in sorted(loaded):
            top = name.split(".")[0]
            if top == "planaria":
                if name not in FRONT and not any(allowed(name) for allowed in self.may_load):
                    found.append(name)
            elif top in self.forbidden:
                found.append(name)
        return found


LAYERS = (
    Layer("front", one_of(FRONT), (), PURE_FORBIDDEN | {"xxhash"}),
    Layer("toolkit (pure)",
          one_of(frozenset({"planaria.address", "planaria.hashing", "planaria.detect"})),
          (one_of(frozenset(TOOLKIT)),), PURE_FORBIDDEN),
    Layer("toolkit", one_of(frozenset(TOOLKIT)), (one_of(frozenset(TOOLKIT)),), ADAPTER_DEPS),
    Layer("core", under("planaria.core"), (under("planaria.core"), one_of(frozenset(TOOLKIT))),
          PURE_FORBIDDEN),
    Layer("check", under("planaria.check"), (under("planaria.check"),), PURE_FORBIDDEN),
    Layer("storage (pure)", one_of(STORAGE_PURE),
          (one_of(STORAGE_PURE), one_of(frozenset({"planaria.core", "planaria.core.messages",
                                                  "planaria.core.codec",
                                                  "planaria.core.transfer"}))),
          PURE_FORBIDDEN),
    Layer("coord (pure)", one_of(COORD_PURE),
          (one_of(COORD_PURE), one_of(frozenset({"planaria.core", "planaria.core.messages"}))),
          PURE_FORBIDDEN),
    Layer("sim", under("planaria.sim"),
          (under("planaria.sim", "planaria.core", "planaria.check"), one_of(STORAGE_PURE),
           one_of(COORD_PURE), one_of(frozenset(TOOLKIT))),
          PURE_FORBIDDEN),
    Layer("chaos (pure)", one_of(CHAOS_PURE), (one_of(CHAOS_PURE), under("planaria.check")),
          PURE_FORBIDDEN),
    Layer("client", under("planaria.client"),
          (under("planaria.client"), one_of(frozenset(TOOLKIT)),
           one_of(frozenset({"planaria.core", "planaria.core.messages", "planaria.core.slots"}))),
          frozenset({"msgpack", "rich", "prometheus_client"}) | OPTIONAL),
    Layer("net", under("planaria.net"), (under("planaria.net", "planaria.core"),),
          frozenset({"hiredis", "rich", "prometheus_client"}) | OPTIONAL),
    Layer("coord", under("planaria.coord"),
          (under("planaria.coord", "planaria.storage"),
           one_of(frozenset({"planaria.core", "planaria.core.messages", "planaria.core.codec",
                             "planaria.net", "planaria.net.frame", "planaria.address",
                             "planaria.retry"}))),
          frozenset({"hiredis", "rich", "uvloop", "matplotlib", "redis"})),
    Layer("storage", under("planaria.storage"),
          (under("planaria.storage"), one_of(frozenset({"planaria.core", "planaria.core.messages",
                                                       "planaria.core.codec",
                                                       "planaria.core.transfer"}))),
          frozenset({"hiredis", "msgpack", "rich"}) | OPTIONAL),
    Layer("node runtime", under("planaria.node"),
          (under("planaria.node", "planaria.core", "planaria.storage", "planaria.net",
                 "planaria.coord"),
           one_of(frozenset({*TOOLKIT, "planaria._loop"}))),
          frozenset({"matplotlib", "redis", "rich", "hiredis"})),
)  # fmt: skip


def all_modules() -> list[str]:
    names = []
    for path in sorted((SRC / "planaria").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


# Runs in a fresh interpreter: imports a few plain standard-library modules every layer may
# use (never planaria, never anything a layer forbids), then forks one child per module named
# on the command line after the reports' directory, one per CPU at a time. Each child
# starts from that pristine state, imports its module and writes what it loaded to a file of
# its own there: a fresh interpreter per module, without paying each one's start-up.
PROBE = """
import json, os, sys
import ast, bisect, collections, dataclasses, enum, functools, hashlib, heapq, inspect
import itertools, math, pathlib, random, re, struct, typing
reports, modules = sys.argv[1], sys.argv[2:]
running = {}
def reap():
    pid, _ = os.wait()
    running.pop(pid)
for index, module in enumerate(modules):
    while len(running) >= (os.cpu_count() or 1):
        reap()
    pid = os.fork()
    if pid == 0:
        before = set(sys.modules)
        try:
            __import__(module)
            report = {"loaded": sorted(set(sys.modules) - before)}
        except BaseException as exc:
            report = {"error": repr(exc)}
        with open(os.path.join(reports, str(index)), "w") as out:
            json.dump(report, out)
        os._exit(0)
    running[pid] = module
while running:
    reap()
result = {}
for index, module in enumerate(modules):
    with open(os.path.join(reports, str(index))) as answer:
        result[module] = json.load(answer)
print(json.dumps(result))
"""
# What the probe itself loads, so never counted against a module.
PROBE_PRELOADS = frozenset(
    {"ast", "bisect", "collections", "dataclasses", "enum", "functools", "hashlib", "heapq"}
    | {"inspect", "itertools", "math", "pathlib", "random", "re", "struct", "typing"}
)


def loaded_by_each(modules: list[str], extra_path: Path | None = None) -> dict[str, set[str]]:
    """What ``import module`` loads, for each module, starting from a fresh interpreter."""
    env = dict(os.environ)
    paths = [str(SRC), *([str(extra_path)] if extra_path else [])]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory(prefix="planaria-layers-") as reports:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, reports, *modules],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr
    reports = json.loads(done.stdout)
    errors = {module: r["error"] for module, r in reports.items() if "error" in r}
    assert errors == {}
    return {module: set(r["loaded"]) for module, r in reports.items()}


def loaded_by(module: str, extra_path: Path | None = None) -> set[str]:
    return loaded_by_each([module], extra_path)[module]


CASES = [
    pytest.param(layer, module, id=f"{layer.name}:{module}")
    for layer in LAYERS
    for module in all_modules()
    if layer.members(module)
]


def test_every_layer_has_members() -> None:
    # A rule over no modules would pass vacuously (a renamed package, a typo).
    for layer in LAYERS:
        assert any(layer.members(m) for m in all_modules()), layer.name


@pytest.fixture(scope="module")
def loaded() -> dict[str, set[str]]:
    return loaded_by_each(sorted({str(case.values[1]) for case in CASES}))


@pytest.mark.parametrize(("layer", "module"), CASES)
def test_import_loads_only_lower_layers(
    layer: Layer, module: str, loaded: dict[str, set[str]]
) -> None:
    assert layer.violations(loaded[module]) == []


def test_public_front_is_lazy() -> None:
    code = (
        "import sys, planaria\n"
        "assert 'planaria.client' not in sys.modules\n"
        "assert planaria.Client.__module__ == 'planaria.client'\n"
        "from planaria import AsyncClient, ReadResult\n"
        "try:\n"
        "    planaria.NoSuchName\n"
        "except AttributeError as exc:\n"
        "    assert 'NoSuchName' in str(exc)\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr


# The checker bites: an indirect import of a forbidden module, two modules away.
def test_checker_reports_an_indirect_import(tmp_path: Path) -> None:
    (tmp_path / "probe_outer.py").write_text("import probe_inner\n")
    (tmp_path / "probe_inner.py").write_text("import planaria.client\n")
    core = next(layer for layer in LAYERS if layer.name == "core")
    found = core.violations(loaded_by("probe_outer", extra_path=tmp_path))
    assert "planaria.client" in found
    assert "asyncio" in found
    assert "hiredis" in found


def test_checker_reports_a_sibling_package() -> None:
    toolkit = next(layer for layer in LAYERS if layer.name == "toolkit")
    assert toolkit.violations({"planaria.core.slots", "planaria.errors"}) == ["planaria.core.slots"]
