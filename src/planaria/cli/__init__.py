"""The ``planaria`` command. Every subcommand's arguments and wiring live in this package,
one private module each (``_node``, ``_cluster``, ``_coord``, ``_sim``, ``_check``,
``_chaos``, ``_demo`` with ``_cluster_demo``); ``_main`` dispatches. Only ``main`` is public.
"""

from __future__ import annotations

from planaria.cli._main import main

__all__ = ["main"]
