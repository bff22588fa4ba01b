"""The Tool Hub: tools an agent names by slug that are neither core tools nor its own.

With `--tool-hub-url` (`AGENTD_TOOL_HUB_URL`) a name in an agent's `tools` that is not a core
tool is a Tool Hub slug: `GET {hub}/tools/{slug}` describes it (`{name, description,
inputSchema}`; 404: there is no such tool), and a call is `POST {hub}/tools/{slug}/invoke`
with the arguments as the JSON body, answered and limited exactly like an agent's custom tool
(`tools/http_tool.py`: timeout, response size, error results). The hub is the operator's own
setting, so its URLs need no `--custom-tool-url-prefixes` entry.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp
import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tools.base import Tool
from tools.http_tool import HttpTool, HttpToolConfig, UrlAllowList, schema_problem
from tools.tls import https_context_ready


class ToolHubError(Exception):
    """The hub could not be asked, or answered something that is not a tool description."""


class HubTool(BaseModel):
    """What `GET {hub}/tools/{slug}` answers."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", defer_build=True)

    name: str = ""
    description: str = ""
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}}, alias="inputSchema"
    )


class ToolHub:
    """Looks tools up on the hub at `base_url` and makes them callable."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.config = HttpToolConfig(
            allow_list=UrlAllowList.parse(f"{self.base_url}/tools/"), timeout=timeout
        )

    def tool_url(self, slug: str) -> str:
        return f"{self.base_url}/tools/{quote(slug, safe='')}"

    async def describe(self, slug: str) -> HubTool | None:
        """The hub's description of `slug`; None when the hub has no such tool. Raises
        ToolHubError when the hub cannot be asked or answers something else."""
        url = self.tool_url(slug)
        tls = await https_context_ready()
        try:
            with anyio.fail_after(self.config.timeout):
                async with (
                    aiohttp.ClientSession(
                        trust_env=False, connector=aiohttp.TCPConnector(ssl=tls)
                    ) as session,
                    session.get(url, allow_redirects=False) as resp,
                ):
                    if resp.status == 404:
                        return None
                    raw = await resp.content.read(self.config.max_response_bytes + 1)
                    status = resp.status
        except TimeoutError:
            raise ToolHubError(
                f"the Tool Hub did not answer GET {url} within {self.config.timeout:g} s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ToolHubError(f"the Tool Hub cannot be reached at {url}: {exc}") from exc
        if not 200 <= status < 300:
            raise ToolHubError(f"the Tool Hub answered GET {url} with HTTP {status}")
        if len(raw) > self.config.max_response_bytes:
            raise ToolHubError(f"the Tool Hub's description of {slug!r} is too large")
        try:
            described = HubTool.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            raise ToolHubError(
                f"the Tool Hub's answer for {slug!r} is not {{name, description, "
                f"inputSchema}}: {exc}"
            ) from exc
        problem = schema_problem(described.input_schema)
        if described.input_schema.get("type", "object") != "object":
            problem = "it must describe a JSON object (type: object)"
        if problem is not None:
            raise ToolHubError(f"the Tool Hub's inputSchema for {slug!r} is not usable: {problem}")
        return described

    def tool(self, slug: str, described: HubTool) -> Tool:
        """The callable tool: the model sees it under `slug`."""
        return HttpTool.create(
            name=slug,
            description=described.description or described.name or slug,
            input_schema=described.input_schema,
            invoke_url=f"{self.tool_url(slug)}/invoke",
            config=self.config,
        )
