"""Compile planaria's hot modules with mypyc (see ``src/planaria/_native.py``).

- ``python hatch_build.py``: compile in place, next to the sources (``make install`` does
  this for a checkout, again whenever a source changes), and write the manifest that lets
  ``import planaria`` use them only while they match the sources.
- As hatchling's custom build hook: a wheel (``pip install .``) gets the compiled modules
  too; an editable install does not (``make`` compiles it). ``PLANARIA_COMPILE=0`` skips
  compiling; a failed compile fails the build, so a slow pure-Python install never passes
  for a compiled one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from mypyc.build import mypycify  # build-time only: the hook's dependencies, or the dev venv
from setuptools import Distribution

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "src"
PACKAGE = SRC / "planaria"


def _native() -> ModuleType:
    # By path: importing the package would run the guard, and the build needs none of it.
    spec = importlib.util.spec_from_file_location("_planaria_native", PACKAGE / "_native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compiled_files() -> list[Path]:
    """What a build leaves: extensions, mypyc's shared library (top level), the manifest."""
    manifest = PACKAGE / _native().MANIFEST_NAME
    return [*PACKAGE.rglob("*.so"), *SRC.glob("*__mypyc*.so"), manifest]


def _remove_compiled() -> None:
    for path in _compiled_files():
        path.unlink(missing_ok=True)


def _compile_sources_in_parallel(build_ext: Any) -> None:
    """Let the C compiler build an extension's sources side by side, one per CPU (the
    compile is most of a fresh ``make install``; distutils runs one source at a time). A
    thread per source is enough: each waits on a ``gcc`` process."""
    build_extension = build_ext.build_extension

    def build_with_parallel_compiler(extension: Any) -> None:
        compiler = build_ext.compiler

        def compile_all(  # noqa: PLR0917 (CCompiler.compile's signature)
            sources: list[str],
            output_dir: str | None = None,
            macros: Any = None,
            include_dirs: Any = None,
            debug: bool = False,
            extra_preargs: Any = None,
            extra_postargs: Any = None,
            depends: Any = None,
        ) -> list[str]:
            # What CCompiler.compile does, with the per-source loop on a thread pool.
            macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
                output_dir, macros, include_dirs, sources, depends, extra_postargs
            )
            cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)

            def compile_one(target: str) -> None:
                source, extension_name = build[target]
                compiler._compile(target, source, extension_name, cc_args, extra_postargs, pp_opts)

            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                list(pool.map(compile_one, objects))  # list(): raise the first failure
            return list(objects)

        compiler.compile = compile_all
        build_extension(extension)

    build_ext.build_extension = build_with_parallel_compiler


def build_in_place() -> list[Path]:
    """Compile the hot modules next to their sources; returns every file written."""
    native = _native()
    _remove_compiled()
    sources = [
        native.source_path(module, PACKAGE).relative_to(ROOT).as_posix()
        for module in native.HOT_MODULES
    ]
    previous = Path.cwd()
    os.chdir(ROOT)  # mypyc names modules from paths relative to here (src/ layout)
    try:
        # One C file per module, so that the compile can use every CPU (the code runs as
        # fast as from one file: `planaria sim --seeds 40` took 10.5 s either way).
        extensions = mypycify(sources, opt_level="3", target_dir="build/mypyc", multi_file=True)
        dist = Distribution(
            {"name": "planaria", "ext_modules": extensions, "package_dir": {"": "src"}}
        )
        build_ext: Any = dist.get_command_obj("build_ext")
        build_ext.inplace = True
        build_ext.build_temp = "build/mypyc-temp"
        build_ext.parallel = os.cpu_count()  # the extensions side by side
        _compile_sources_in_parallel(build_ext)  # and each one's sources
        dist.run_command("build_ext")
    finally:
        os.chdir(previous)
    (PACKAGE / native.MANIFEST_NAME).write_text(json.dumps(native.manifest_for(PACKAGE)) + "\n")
    return _compiled_files()


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script, outside a build
    BuildHookInterface = object  # type: ignore[assignment, misc]


class NativeBuildHook(BuildHookInterface):  # type: ignore[misc, valid-type]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        if os.environ.get("PLANARIA_COMPILE") == "0":
            _remove_compiled()  # never ship extensions left over from another build
            return
        for path in build_in_place():
            if path.parent == SRC:  # mypyc's shared library sits at the top level
                build_data["force_include"][str(path)] = path.name
            else:
                build_data["artifacts"].append(path.relative_to(ROOT).as_posix())
        build_data["pure_python"] = False
        build_data["infer_tag"] = True


if __name__ == "__main__":
    if os.environ.get("PLANARIA_COMPILE") == "0":
        _remove_compiled()
        print("PLANARIA_COMPILE=0: the hot modules run as Python", file=sys.stderr)
    else:
        written = build_in_place()
        modules = [p for p in written if p.suffix == ".so" and p.parent != SRC]
        print(f"compiled {len(modules)} hot modules with mypyc", file=sys.stderr)
