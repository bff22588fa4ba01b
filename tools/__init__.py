"""Every tool the model can call. Importing this package registers the core tools."""

from tools.base import Tool, ToolArgs, Toolbox, ToolContext, ToolError, ToolResult, ToolSettings

__all__ = ["Tool", "ToolArgs", "ToolContext", "ToolError", "ToolResult", "ToolSettings", "Toolbox"]

# Core tool modules register themselves on import (see tools.base.register_tool).
# Each is listed here once it exists; keep the list in the order models should see them.
# isort: off
from tools import exec as exec  # exec_command, write_stdin, bash
from tools import patch as patch  # apply_patch
from tools import files as files  # read_file, write_file, edit_file, list_dir, glob, grep
from tools import dev_url as dev_url  # get_dev_url
# isort: on
