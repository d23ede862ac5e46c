"""Lazy public fronts: a package re-exports names whose modules load on first use (PEP 562),
so importing the package (or a pure module under it) loads nothing it does not need."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_front"]


def lazy_front(
    package: str, lazy: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose names in ``lazy`` (name ->
    module) load from their module the first time they are looked up."""

    def get_attribute(name: str) -> Any:
        module = lazy.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def list_names() -> list[str]:
        return sorted(set(namespace) | set(lazy))

    return get_attribute, list_names
