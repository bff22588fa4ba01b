"""Every tool the model can call.

The core tool modules register themselves on import (see tools.base.register_tool) and are
imported on first need, by `load_core_tools()` — which `core_tool_names()`,
`default_tool_names()` and every `Toolbox` call — not by importing this package. So the
daemon answers `/readyz` without loading them (start-up time), and code that needs only
`tools.base` or `tools.workspace` never pays for pexpect, unidiff and the tools' models.
"""

from __future__ import annotations

import importlib

from tools.base import (
    TOOL_REGISTRY,
    Tool,
    ToolArgs,
    Toolbox,
    ToolContext,
    ToolError,
    ToolResult,
    ToolSettings,
)

__all__ = [
    "CORE_TOOL_MODULES",
    "Tool",
    "ToolArgs",
    "ToolContext",
    "ToolError",
    "ToolResult",
    "ToolSettings",
    "Toolbox",
    "load_core_tools",
]

# The core tool modules, in the order models should see their tools; add one here once it
# exists.
CORE_TOOL_MODULES = (
    "tools.exec",  # exec_command, write_stdin, bash
    "tools.patch",  # apply_patch
    "tools.files",  # read_file, write_file, edit_file, list_dir, glob, grep
    "tools.dev_url",  # get_dev_url
)

_loaded = False


def load_core_tools() -> None:
    """Import (and so register) every core tool module. Cheap after the first call."""
    global _loaded
    if _loaded:
        return
    modules = [importlib.import_module(name) for name in CORE_TOOL_MODULES]
    # A tool module imported on its own before this (`import tools.files` in a test or a
    # benchmark) registered its tools early: restore the documented order, which is the order
    # of the tool specs a model is sent. Tools registered from elsewhere follow the core ones.
    rank = {module.__name__: i for i, module in enumerate(modules)}
    ordered = sorted(
        TOOL_REGISTRY.items(), key=lambda item: rank.get(item[1].__module__, len(rank))
    )
    TOOL_REGISTRY.clear()
    TOOL_REGISTRY.update(ordered)
    _loaded = True
