"""The package's layers, enforced (issue 13, part 6).

* ``import daskem`` is cheap: it imports neither distributed nor numba nor matplotlib, and
  takes at most 0.5 s (public names are imported lazily, PEP 562);
* ``daskem.models`` and every ``daskem.models.*`` module never import dask;
* ``daskem.cli`` imports neither distributed nor numba nor matplotlib at module import time;
* ``daskem.em`` never imports ``daskem.estimators`` or ``daskem.cli``, directly or through
  other daskem modules (static: every import statement, function-level ones included);
* production code (``daskem`` outside ``daskem/testing/``) never imports ``daskem.testing``
  (static).

The run-time checks each start a fresh interpreter and read its ``sys.modules``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

import daskem

PACKAGE_DIR = Path(daskem.__file__).resolve().parent
HEAVY = ("distributed", "numba", "matplotlib")


def _run_python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object, returned here."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=PACKAGE_DIR.parent
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _top_level(names: list[str]) -> list[str]:
    return sorted({name.split(".")[0] for name in names})


# --- run time: fresh interpreters ------------------------------------------------------


def test_import_daskem_is_cheap():
    code = (
        "import json, sys, time\n"
        "start = time.perf_counter()\n"
        "import daskem\n"
        "seconds = time.perf_counter() - start\n"
        "print(json.dumps({'seconds': seconds, 'modules': sorted(sys.modules)}))\n"
    )
    report = _run_python(code)
    heavy = [name for name in HEAVY if name in _top_level(report["modules"])]
    assert heavy == [], f"`import daskem` imports {heavy}"
    assert report["seconds"] <= 0.5, f"`import daskem` took {report['seconds']:.2f} s"


def test_lazy_public_names():
    """The lazy top level still gives every public name, ``__version__`` and ``import *``."""
    from importlib.metadata import version

    from daskem import GaussianMixture
    from daskem.estimators import GaussianMixture as defined

    assert GaussianMixture is defined
    assert daskem.__version__ == version("daskem")
    for name in daskem.__all__:
        assert getattr(daskem, name) is not None, name
    assert set(daskem.__all__) <= set(dir(daskem))
    namespace: dict = {}
    exec("from daskem import *", namespace)
    assert set(daskem.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        daskem.no_such_name  # noqa: B018


def _model_modules() -> list[str]:
    return sorted(
        f"daskem.models.{path.stem}" for path in (PACKAGE_DIR / "models").glob("*.py") if path.stem != "__init__"
    )


def test_models_never_import_dask():
    """``import daskem.models``, then each ``daskem.models.*`` module: dask is never imported.

    One interpreter imports them in turn and records the new top-level modules after each,
    so a module that imports dask is named (the first one after which dask appears).
    """
    modules = ["daskem.models", *_model_modules()]
    code = (
        "import importlib, json, sys\n"
        f"modules = {modules!r}\n"
        "seen = {}\n"
        "for name in modules:\n"
        "    importlib.import_module(name)\n"
        "    seen[name] = sorted({m.split('.')[0] for m in sys.modules})\n"
        "print(json.dumps(seen))\n"
    )
    seen = _run_python(code)
    importing_dask = [name for name in modules if "dask" in seen[name]]
    assert importing_dask == [], f"dask is imported by {importing_dask[0]}"
    assert set(seen) == set(modules)


def test_worker_side_never_imports_sklearn():
    """What a worker process unpickles (the engine's graph functions, the sources' readers,
    every model) leaves scikit-learn out: its import costs each worker ~1.4 s of CPU."""
    modules = ["daskem.em", "daskem.io", "daskem.errors", *_model_modules()]
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert "sklearn" not in _top_level(_run_python(code))


def test_cli_import_is_light():
    """``import daskem.cli`` (the ``daskem`` command's module) loads no cluster, JIT or plotting."""
    code = "import json, sys\nimport daskem.cli\nprint(json.dumps(sorted(sys.modules)))\n"
    heavy = [name for name in HEAVY if name in _top_level(_run_python(code))]
    assert heavy == [], f"`import daskem.cli` imports {heavy}"


# --- static: every import statement of the package's files -------------------------------


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _package_files() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@cache
def _imports(module: str) -> tuple[str, ...]:
    """Every module named by an import in ``module``'s file (any depth, ``TYPE_CHECKING`` excluded).

    ``from a import b`` names both ``a`` and ``a.b`` (b may be a submodule); a string literal
    given to ``importlib.import_module`` / ``__import__`` counts as an import too.
    """
    path = _package_files()[module]
    return _imports_in(path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py")


def _imports_in(source: str, module: str, *, is_package: bool) -> tuple[str, ...]:
    package = module if is_package else module.rpartition(".")[0]
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            found.append(source)
            found.extend(f"{source}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.append(first.value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source, filename=module))
    return tuple(found)


def _daskem_modules_imported_by(module: str) -> set[str]:
    """The package's modules that importing ``module``'s names loads (with parent packages)."""
    files = _package_files()
    loaded: set[str] = set()
    for name in _imports(module):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in files:
                loaded.add(prefix)
    loaded.discard(module)
    return loaded


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_import_scan_sees_function_level_and_relative_imports():
    """The scanner itself: every form of import is seen, TYPE_CHECKING blocks are not."""
    source = (
        "import daskem.io\n"
        "from typing import TYPE_CHECKING\n"
        "from . import monitor\n"
        "from ..models import gmm as g\n"
        "if TYPE_CHECKING:\n"
        "    from daskem.cli import main\n"
        "else:\n"
        "    import daskem.plot\n"
        "def f():\n"
        "    from daskem.estimators import KMeans\n"
        "    import importlib\n"
        "    return importlib.import_module('daskem.select')\n"
    )
    found = set(_imports_in(source, "daskem.em.engine", is_package=False))
    assert found >= {
        "daskem.io",
        "daskem.em",
        "daskem.em.monitor",
        "daskem.models",
        "daskem.models.gmm",
        "daskem.plot",
        "daskem.estimators",
        "daskem.estimators.KMeans",
        "daskem.select",
    }
    assert not any(_in(name, "daskem.cli") for name in found)
    assert set(_imports_in("from .. import io", "daskem.em", is_package=True)) == {"daskem", "daskem.io"}
    # the lazy top level's TYPE_CHECKING imports are for mypy, not run time
    assert not any(_in(name, "daskem.estimators") for name in _daskem_modules_imported_by("daskem"))


def test_em_never_imports_estimators_or_cli():
    """Follow every import from ``daskem.em`` through the package: no estimator, no CLI."""
    start = [name for name in _package_files() if _in(name, "daskem.em")]
    assert start, "no daskem.em modules found"
    parent: dict[str, str | None] = dict.fromkeys(start)
    queue = list(start)
    while queue:
        module = queue.pop()
        for imported in sorted(_daskem_modules_imported_by(module)):
            if imported not in parent:
                parent[imported] = module
                queue.append(imported)
    forbidden = sorted(name for name in parent if _in(name, "daskem.estimators") or _in(name, "daskem.cli"))

    def chain(name: str) -> str:
        links = [name]
        while parent[links[-1]] is not None:
            links.append(parent[links[-1]])  # type: ignore[arg-type]
        return " <- ".join(links)

    assert forbidden == [], "daskem.em reaches: " + "; ".join(chain(name) for name in forbidden)


@pytest.mark.parametrize("module", [name for name in _package_files() if not _in(name, "daskem.testing")])
def test_production_never_imports_testing(module):
    imported = sorted(name for name in _imports(module) if _in(name, "daskem.testing"))
    assert imported == [], f"{module} imports {imported}"
