"""Every tool the model can call.

Each core tool module lists its tools in `TOOLS`; `load_core_tools()` imports the modules of
`CORE_TOOL_MODULES` and registers those tools, in that order (the order models see them).
Importing a tool module registers nothing. The modules are imported on first need — by
`core_tool_names()`, `default_tool_names()` and every `Toolbox` — not by importing this
package. So the
daemon answers `/readyz` without loading them (start-up time), and code that needs only
`tools.base` or `tools.workspace` never pays for pexpect, unidiff and the tools' models.
"""

from __future__ import annotations

import importlib

import anyio

from tools.base import (
    Tool,
    ToolArgs,
    Toolbox,
    ToolContext,
    ToolError,
    ToolResult,
    ToolSettings,
    register_tool,
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
    "core_tools_ready",
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


async def core_tools_ready() -> None:
    """`load_core_tools` for async callers: the first load imports every tool module (a
    few hundred ms of CPU), so it runs in a worker thread; later calls return at once."""
    if not _loaded:
        await anyio.to_thread.run_sync(load_core_tools)


def load_core_tools() -> None:
    """Import every core tool module and register its tools. Cheap after the first call."""
    global _loaded
    if _loaded:
        return
    for name in CORE_TOOL_MODULES:
        module = importlib.import_module(name)
        for tool in module.TOOLS:
            register_tool(tool)
    _loaded = True
