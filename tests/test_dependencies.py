"""Dependencies are honest: what is installed is what the lock pins, every import is declared,
and the locks agree with pyproject.toml's ranges (CONVENTIONS §9)."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME = [Requirement(spec) for spec in PYPROJECT["dependencies"]]
TEST = [Requirement(spec) for spec in PYPROJECT["optional-dependencies"]["test"]]
LOCAL_PACKAGES = {"runtime", "tools", "tests", "benchmarks"}

# `name==version ; marker \` opening each locked package
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked(path: Path) -> dict[str, tuple[str, str | None]]:
    """Package → (version, marker) for every pin in a lock file."""
    pins = {}
    for line in path.read_text().splitlines():
        if match := _PIN.match(line):
            name, version, marker = match.groups()
            pins[canonicalize_name(name)] = (version, marker)
    return pins


TEST_LOCK = locked(ROOT / "requirements-test.lock")
RUNTIME_LOCK = locked(ROOT / "requirements.lock")


def applies(marker: str | None) -> bool:
    return marker is None or Marker(marker).evaluate()


@pytest.mark.skipif(
    bool(os.environ.get("AGENTD_UNLOCKED")), reason="./run test --latest/--floors: not the lock"
)
def test_what_is_installed_is_what_the_lock_pins() -> None:
    different = {}
    for name, (version, marker) in TEST_LOCK.items():
        if not applies(marker):
            continue
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            different[name] = (version, installed)
    assert not different, f"locked vs installed: {different}; run ./run test (it installs)"


def test_the_runtime_lock_is_the_test_locks_runtime_subset() -> None:
    assert RUNTIME_LOCK, "requirements.lock pins nothing"
    for name, pin in RUNTIME_LOCK.items():
        assert TEST_LOCK.get(name, (None,))[0] == pin[0], name
    for requirement in RUNTIME:
        assert canonicalize_name(requirement.name) in RUNTIME_LOCK, requirement.name


def test_the_locks_satisfy_pyprojects_ranges() -> None:
    """pyproject.toml changed without `./run lock`: a pin outside the declared range."""
    for requirement in [*RUNTIME, *TEST]:
        pin = TEST_LOCK.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} is not in requirements-test.lock: ./run lock"
        assert requirement.specifier.contains(pin[0], prereleases=True), (
            f"{requirement} but the lock pins {pin[0]}: ./run lock"
        )


def imported_top_levels(folder: Path) -> set[str]:
    names = set()
    for path in folder.rglob("*.py"):
        if "demo_app" in path.parts:  # files the demo's model writes: data, not our code
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - LOCAL_PACKAGES - {"__future__"}


def distributions_of(modules: set[str]) -> dict[str, set[str]]:
    providers = importlib.metadata.packages_distributions()
    return {m: {canonicalize_name(d) for d in providers.get(m, [])} for m in modules}


@pytest.mark.parametrize(
    ("folders", "declared"),
    [
        (["runtime", "tools"], RUNTIME),
        (["tests", "benchmarks"], [*RUNTIME, *TEST]),
    ],
    ids=["runtime", "tests"],
)
def test_every_import_is_declared(folders: list[str], declared: list[Requirement]) -> None:
    names = {canonicalize_name(r.name) for r in declared}
    modules = set().union(*(imported_top_levels(ROOT / f) for f in folders))
    undeclared = {
        module: sorted(dists) or ["(not installed)"]
        for module, dists in distributions_of(modules).items()
        if not dists & names
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_pip_check_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_daemon_reports_the_version_it_is_distributed_as() -> None:
    """`daemon_version()` (healthz, the link's hello) reads `runtime.__version__`, which must
    be pyproject.toml's version, which the installed distribution carries."""
    from runtime.api.app import daemon_version

    assert daemon_version() == PYPROJECT["version"]
    assert daemon_version() == importlib.metadata.version("runtools-agentd")
