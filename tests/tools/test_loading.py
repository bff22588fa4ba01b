"""Core tool modules load on first need (tools/__init__.py), yet every tool is always listed,
in the documented order. Each case runs in a fresh interpreter: this one has long loaded them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

REPORT = (
    "import json, sys\n"
    "from tools import CORE_TOOL_MODULES\n"
    "from tools.base import TOOL_REGISTRY, Toolbox, core_tool_names, default_tool_names\n"
    "early = sorted(m for m in CORE_TOOL_MODULES if m in sys.modules)\n"
    "names = core_tool_names()\n"
    "box = Toolbox('.')\n"
    "print(json.dumps({'early': early, 'names': names, 'box': box.names,\n"
    "    'default': default_tool_names(),\n"
    "    'modules': [TOOL_REGISTRY[n].__module__ for n in names],\n"
    "    'core': list(CORE_TOOL_MODULES)}))\n"
)


def run(prelude: str = "") -> dict:
    out = subprocess.run(
        [sys.executable, "-c", prelude + REPORT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_importing_the_package_loads_no_tool_module_and_first_use_lists_them_all() -> None:
    report = run()
    assert report["early"] == []  # `from tools import ...` and tools.base alone
    names, modules, core = report["names"], report["modules"], report["core"]
    expected = {
        "exec_command",
        "write_stdin",
        "apply_patch",
        "read_file",
        "write_file",
        "edit_file",
        "list_dir",
        "glob",
        "grep",
        "get_dev_url",
    }
    assert expected <= set(names)
    assert set(modules) == set(core)  # every core module contributed its tools
    # Grouped by module, the modules in CORE_TOOL_MODULES order.
    assert [core.index(m) for m in modules] == sorted(core.index(m) for m in modules)
    # A default Toolbox offers the same tools but the aliases (bash), in the same order.
    assert report["box"] == report["default"] == [n for n in names if n != "bash"]


def test_the_order_does_not_depend_on_which_tool_module_was_imported_first() -> None:
    fresh = run()["names"]
    early = run("import tools.dev_url, tools.files\n")
    assert early["early"] == ["tools.dev_url", "tools.files", "tools.patch"]  # files needs patch
    assert early["names"] == fresh
    assert early["box"] == early["default"] == [n for n in fresh if n != "bash"]
