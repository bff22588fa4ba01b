"""The tool specs a run offers its model, with each core tool's schema generated once."""

from __future__ import annotations

import copy
from typing import Any

from tools.base import TOOL_REGISTRY, Toolbox


class ToolSpecCache:
    """A toolbox's specs; a tool class's JSON schema is generated once per cache (pydantic's
    schema generation costs ~0.4 ms per tool, on every run otherwise)."""

    def __init__(self) -> None:
        self._specs: dict[type, dict[str, Any]] = {}

    def specs(self, toolbox: Toolbox) -> list[dict[str, Any]]:
        """The specs of `toolbox`'s tools, in its order; each a copy the caller may change."""
        specs = []
        for name in toolbox.names:
            tool = toolbox.tool(name)
            assert tool is not None
            if TOOL_REGISTRY.get(name) is not type(tool):
                specs.append(tool.spec())  # a custom tool: its schema is per instance
                continue
            spec = self._specs.get(type(tool))
            if spec is None:
                spec = self._specs[type(tool)] = tool.spec()
            specs.append(copy.deepcopy(spec))
        return specs
