"""The tool specs a run offers its model, with each core tool's schema generated once."""

from __future__ import annotations

import copy
from typing import Any

from tools.base import TOOL_REGISTRY, Tool, Toolbox

# A core tool's spec depends on its class alone, so it is generated once per process: by the
# daemon's warm-up, in its worker thread (`build_core_specs`), or else by the first run that
# offers the tool. (pydantic's schema generation costs ~0.4 ms per tool, and pydantic may
# import a module of its own the first time: work for the warm-up, not the event loop.)
_core_specs: dict[type[Tool], dict[str, Any]] = {}


def build_core_specs() -> int:
    """Blocking: generate the spec of every registered tool not generated yet. Returns how
    many it generated."""
    missing = [tool for tool in list(TOOL_REGISTRY.values()) if tool not in _core_specs]
    for tool in missing:
        _core_spec(tool)
    return len(missing)


def _core_spec(tool: type[Tool]) -> dict[str, Any]:
    spec = _core_specs.get(tool)
    if spec is None:
        spec = _core_specs[tool] = tool.spec()
    return spec


def toolbox_specs(toolbox: Toolbox) -> list[dict[str, Any]]:
    """The specs of `toolbox`'s tools, in its order, each a copy the caller may change: a
    registered tool's from the process's specs (generated once), a custom tool's generated
    per instance."""
    specs = []
    for name in toolbox.names:
        tool = toolbox.tool(name)
        assert tool is not None
        if TOOL_REGISTRY.get(name) is not type(tool):
            specs.append(tool.spec())  # a custom tool: its schema is per instance
            continue
        specs.append(copy.deepcopy(_core_spec(type(tool))))
    return specs
