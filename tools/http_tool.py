"""Custom tools: an agent's `{name, description, inputSchema, invokeUrl}` as a tool that POSTs
the call's arguments to `invokeUrl` and gives the model the answer.

The contract with the tool's server:

- Request: `POST invokeUrl` with the arguments object as the JSON body (after checking it
  against the agent's `inputSchema`), `Content-Type: application/json`, `X-Agentd-Tool: <name>`,
  and `X-Agentd-Call-Id` / `X-Agentd-Run-Id` when the call has them. No cookies are kept and
  no proxy or netrc settings from the environment are used.
- A 2xx answer is the result. When its Content-Type is JSON (`application/json` or `*+json`)
  and the body is an object with an `output` (or else a `result`) field, that field is the
  result: a string as it is, anything else as compact JSON; `"isError": true` in the same
  object makes it an error result the model reads. Any other body is the result text as sent.
- Any other status is an error result naming the status, with the start of the body.
- Redirects (301/302/303 re-sent as GET, 307/308 re-POSTed) are followed only to URLs the
  allow-list accepts, at most `max_redirects` times. Every URL, the first one included, is
  checked against the allow-list when the call is made.
- Connection failures, timeouts (`timeout` for the whole call) and answers larger than
  `max_response_bytes` are error results; the text the model reads is capped at
  `max_output_bytes` (head and tail kept).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import anyio
from pydantic import ConfigDict
from yarl import URL

from tools.base import Tool, ToolArgs, Toolbox, ToolContext, ToolResult, truncate_middle
from tools.tls import https_context_ready

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SNIPPET_CHARS = 1000


@dataclass(frozen=True)
class _Prefix:
    scheme: str
    host: str
    port: int | None
    path: str

    def matches(self, url: URL) -> bool:
        if (url.scheme, url.raw_host, url.port) != (self.scheme, self.host, self.port):
            return False
        if self.path.endswith("/"):
            return url.path.startswith(self.path)
        return url.path == self.path or url.path.startswith(self.path + "/")


@dataclass(frozen=True)
class UrlAllowList:
    """The URLs custom tools may call: `http(s)://host[:port][/path]` prefixes, or `*`.

    A prefix matches URLs with the same scheme, host and port whose (normalised) path is
    the prefix's path or lies under it: `https://api.example/tools` allows
    `https://api.example/tools` and `https://api.example/tools/x`, not `.../tools-x`.
    `*` allows every http(s) URL. The empty list allows nothing."""

    prefixes: tuple[_Prefix, ...] = ()
    allow_all: bool = False

    @classmethod
    def parse(cls, entries: str | Iterable[str]) -> UrlAllowList:
        """From a comma-separated string or a list; raises ValueError naming a bad entry."""
        if isinstance(entries, str):
            entries = entries.split(",")
        prefixes: list[_Prefix] = []
        allow_all = False
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            if entry == "*":
                allow_all = True
                continue
            try:
                url = URL(entry)
            except ValueError as exc:
                raise ValueError(f"custom tool URL prefix {entry!r} is not a URL: {exc}") from None
            if url.scheme not in ("http", "https") or not url.raw_host:
                raise ValueError(
                    f"custom tool URL prefix {entry!r} must be an http:// or https:// URL "
                    "with a host (or * for any URL)"
                )
            if url.query_string or url.fragment or url.user is not None:
                raise ValueError(
                    f"custom tool URL prefix {entry!r} must not have a query, a fragment "
                    "or credentials"
                )
            prefixes.append(_Prefix(url.scheme, url.raw_host, url.port, url.path or "/"))
        return cls(tuple(dict.fromkeys(prefixes)), allow_all)

    def allows(self, url: str | URL) -> bool:
        if isinstance(url, str):
            try:
                url = URL(url)
            except ValueError:
                return False
        if not url.is_absolute() or url.scheme not in ("http", "https") or not url.raw_host:
            return False
        return self.allow_all or any(prefix.matches(url) for prefix in self.prefixes)

    def __bool__(self) -> bool:
        return self.allow_all or bool(self.prefixes)

    def describe(self) -> str:
        if self.allow_all:
            return "any http(s) URL"
        if not self.prefixes:
            return "no URL"
        return ", ".join(
            str(URL.build(scheme=p.scheme, host=p.host, port=p.port, path=p.path))
            for p in self.prefixes
        )


@dataclass(frozen=True)
class HttpToolConfig:
    """What the daemon's operator decides for every custom tool."""

    allow_list: UrlAllowList = field(default_factory=UrlAllowList)
    timeout: float = 30.0
    max_response_bytes: int = 1024 * 1024
    max_output_bytes: int = 40_000
    max_redirects: int = 5


class HttpToolArgs(ToolArgs):
    """Any JSON object: the agent's `inputSchema` is checked by the tool itself."""

    model_config = ConfigDict(extra="allow")


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why `schema` is not a usable JSON Schema (None when it is). Honours `$schema`;
    draft 2020-12 otherwise."""
    from jsonschema import exceptions

    if not isinstance(schema.get("$schema", ""), str):
        return "$schema must be a string (the URI of a JSON Schema draft)"
    cls = _validator_class(schema)
    try:
        cls.check_schema(schema)
    except exceptions.SchemaError as exc:
        where = _json_path(exc.absolute_path)
        return f"{exc.message} (at {where} of the schema)"
    return None


class HttpTool(Tool):
    """A custom tool. Build one with `HttpTool.create(...)`: each gets its own subclass, since
    a tool's name, description and schema belong to its class (`Tool.spec`)."""

    description = "A custom tool."
    Args = HttpToolArgs
    input_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}

    def __init__(self, invoke_url: str, config: HttpToolConfig) -> None:
        self.invoke_url = invoke_url
        self.config = config
        self._validator: Validator | None = None

    @classmethod
    def create(
        cls,
        *,
        name: str,
        description: str,
        input_schema: dict[str, Any],
        invoke_url: str,
        config: HttpToolConfig,
    ) -> HttpTool:
        namespace = {
            "name": name,
            "description": description,
            "input_schema": copy.deepcopy(input_schema),
            "__module__": cls.__module__,
            "__qualname__": f"{cls.__qualname__}[{name}]",
        }
        subclass: type[HttpTool] = type(f"{cls.__name__}[{name}]", (cls,), namespace)
        return subclass(invoke_url, config)

    @classmethod
    def spec(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "description": cls.description,
            "input_schema": copy.deepcopy(cls.input_schema),
        }

    async def run(self, args: HttpToolArgs, ctx: ToolContext) -> ToolResult:
        arguments = dict(args.model_extra or {})
        problem = self._argument_problems(arguments)
        if problem is not None:
            return ToolResult.error(problem, code="invalid_arguments")
        url = URL(self.invoke_url)
        if not self.config.allow_list.allows(url):
            return ToolResult.error(
                f"{self.name} cannot be used: its invokeUrl {self.invoke_url} is not allowed "
                f"by this daemon (allowed: {self.config.allow_list.describe()}). Do not call "
                "it again; continue without it.",
                code="url_not_allowed",
            )
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/*;q=0.9, */*;q=0.5",
            "User-Agent": "agentd-custom-tool",
            "X-Agentd-Tool": self.name,
        }
        if ctx.call_id is not None:
            headers["X-Agentd-Call-Id"] = ctx.call_id
        if ctx.run_id is not None:
            headers["X-Agentd-Run-Id"] = ctx.run_id
        body = json.dumps(arguments, ensure_ascii=False).encode()
        session = ctx.service(HttpClient).session()
        try:
            with anyio.fail_after(self.config.timeout):
                return await self._exchange(session, url, body, headers)
        except TimeoutError:
            return ToolResult.error(
                f"{self.name} did not answer within {self.config.timeout:g} seconds "
                f"({self.invoke_url}). Retry once if the call is worth it, with narrower "
                "arguments if they decide how much work it does; otherwise continue without it.",
                code="timeout",
            )
        except (aiohttp.ClientError, OSError) as exc:
            return ToolResult.error(
                f"{self.name} could not be reached at {self.invoke_url}: "
                f"{type(exc).__name__}: {exc}. The tool's server may be down; retry later "
                "or continue without it.",
                code="unreachable",
            )

    def _argument_problems(self, arguments: dict[str, Any]) -> str | None:
        from jsonschema import exceptions

        try:
            if self._validator is None:
                self._validator = _validator_class(self.input_schema)(self.input_schema)
            errors = sorted(self._validator.iter_errors(arguments), key=exceptions.relevance)
        except Exception as exc:  # e.g. an unresolvable $ref: the schema's fault, not the call's
            return (
                f"{self.name}'s inputSchema cannot be checked ({type(exc).__name__}: {exc}); "
                "the agent's definition must be fixed. Continue without this tool."
            )
        if not errors:
            return None
        shown = [f"at {_json_path(e.absolute_path)}: {e.message}" for e in errors[:5]]
        if len(errors) > 5:
            shown.append(f"and {len(errors) - 5} more")
        return f"Invalid arguments for {self.name}: {'; '.join(shown)}. {self._usage()}"

    def _usage(self) -> str:
        schema = self.input_schema
        required = set(schema.get("required", []))
        parts = []
        for prop, prop_schema in schema.get("properties", {}).items():
            kind = prop_schema.get("type", "any") if isinstance(prop_schema, dict) else "any"
            if isinstance(kind, list):
                kind = "|".join(map(str, kind))
            parts.append(f"{prop} ({kind}{', required' if prop in required else ''})")
        return f"{self.name} takes: {'; '.join(parts) or 'no documented arguments'}."

    async def _exchange(
        self, session: aiohttp.ClientSession, url: URL, body: bytes, headers: dict[str, str]
    ) -> ToolResult:
        method = "POST"
        data: bytes | None = body
        tls = await https_context_ready()
        for _ in range(self.config.max_redirects + 1):
            async with session.request(
                method, url, data=data, headers=headers, allow_redirects=False, ssl=tls
            ) as response:
                location = response.headers.get("Location")
                if response.status in _REDIRECTS and location:
                    try:
                        target = url.join(URL(location))
                    except ValueError:
                        return self._http_error(response, f"a malformed Location {location!r}")
                    if not self.config.allow_list.allows(target):
                        return ToolResult.error(
                            f"{self.name} failed: {url} redirected (HTTP {response.status}) to "
                            f"{target}, which this daemon does not allow custom tools to "
                            "call. The tool's server must be fixed; continue without it.",
                            code="redirect_not_allowed",
                            status=response.status,
                        )
                    if response.status in (301, 302, 303):
                        method, data = "GET", None
                        headers = {k: v for k, v in headers.items() if k != "Content-Type"}
                    url = target
                    continue
                return await self._result(response)
        return ToolResult.error(
            f"{self.name} failed: more than {self.config.max_redirects} redirects starting "
            f"at {self.invoke_url}. The tool's server must be fixed; continue without it.",
            code="too_many_redirects",
        )

    async def _result(self, response: aiohttp.ClientResponse) -> ToolResult:
        cap = self.config.max_response_bytes
        raw, complete = await _read_capped(response, cap)
        text = _decode(raw, response)
        if not 200 <= response.status < 300:
            return self._http_error(response, text)
        if not complete:
            return ToolResult.error(
                f"{self.name} answered with more than {cap} bytes, which is more than a tool "
                "result may be; it was discarded. Ask for less (narrower arguments) if the "
                f"tool allows it. It began: {_snippet(text)}",
                code="response_too_large",
                status=response.status,
            )
        output, is_error = text, False
        if _is_json(response.content_type):
            output, is_error = _json_output(text)
        elif b"\x00" in raw:
            output = f"(binary response: {response.content_type}, {len(raw)} bytes)"
        if not output:
            output = f"(empty response, HTTP {response.status})"
        output, cut = truncate_middle(output, self.config.max_output_bytes)
        data = {"status": response.status, "url": str(response.url), "bytes": len(raw)}
        if cut:
            data["truncated_bytes"] = cut
        if is_error:
            return ToolResult(output=output, is_error=True, data={**data, "code": "tool_error"})
        return ToolResult(output=output, data=data)

    def _http_error(self, response: aiohttp.ClientResponse, detail: str) -> ToolResult:
        status = response.status
        if status == 429 or status == 503:
            retry = response.headers.get("Retry-After")
            hint = "The tool is busy; retry later" + (f" (Retry-After: {retry})" if retry else "")
        elif 400 <= status < 500:
            hint = "Check the arguments against the tool's description and schema"
        else:
            hint = "The tool's server failed; retry once or continue without it"
        answer = f"HTTP {status} {response.reason or ''}".rstrip()
        return ToolResult.error(
            f"{self.name} failed: {response.url} answered {answer}. {hint}. "
            f"Response: {_snippet(detail) or '(empty)'}",
            code="http_error",
            status=status,
        )


class HttpClient:
    """The toolbox's HTTP session for custom tool calls (a `Toolbox` service, closed with
    it): no cookie jar, no environment proxy or netrc settings, redirects handled by the
    tool."""

    def __init__(self, box: Toolbox) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _validator_class(schema: dict[str, Any]) -> type[Validator]:
    """The validator of the schema's `$schema` draft; draft 2020-12 when it names none."""
    from jsonschema import validators

    cls: type[Validator] = validators.Draft202012Validator
    if isinstance(schema.get("$schema"), str):
        cls = validators.validator_for(schema, default=cls)
    return cls


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> tuple[bytes, bool]:
    """Up to `cap` bytes of the body, and whether that is all of it."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return b"".join(chunks)[:cap], False
    return b"".join(chunks), True


def _decode(raw: bytes, response: aiohttp.ClientResponse) -> str:
    try:
        return raw.decode(response.charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset
        return raw.decode("utf-8", errors="replace")


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def _json_output(text: str) -> tuple[str, bool]:
    try:
        value = json.loads(text)
    except ValueError:
        return text, False
    if not isinstance(value, dict):
        return text, False
    for key in ("output", "result"):
        if key in value:
            found = value[key]
            output = found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)
            return output, value.get("isError") is True
    return text, False


def _snippet(text: str) -> str:
    text = text.strip()
    if len(text) <= _SNIPPET_CHARS:
        return text
    return text[:_SNIPPET_CHARS] + f"… ({len(text)} characters)"


def _json_path(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the top level"
