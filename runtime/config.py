"""Daemon settings: one pydantic model, filled from command-line flags over environment
variables over defaults.

Every setting has an environment variable: `AGENTD_<NAME>` (e.g. `AGENTD_PORT`,
`AGENTD_TOKEN`), and the platform-wide `RUNTOOLS_<NAME>` spelling is accepted too (e.g.
`RUNTOOLS_STATE_DIR`, `RUNTOOLS_DEV_URL_TEMPLATE`, `RUNTOOLS_SANDBOX_ID`). When both are set
the `AGENTD_` one wins. A flag given on the command line wins over both.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from tools.http_tool import UrlAllowList

LogLevel = Literal["debug", "info", "warning", "error", "critical"]

ENV_PREFIXES = ("AGENTD_", "RUNTOOLS_")
# The model of an agent defined without one (`--default-model` overrides it).
DEFAULT_MODEL = "claude-sonnet-5-5"


class ConfigError(ValueError):
    """Settings that cannot work together; the message says what to change."""


def default_state_dir() -> Path:
    return Path("~/.local/state/agentd").expanduser()


class Settings(BaseModel):
    """Everything the daemon is configured with. Field names are the flag names
    (`state_dir` ↔ `--state-dir` ↔ `AGENTD_STATE_DIR` / `RUNTOOLS_STATE_DIR`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(7777, ge=0, le=65535, description="TCP port (0: any free port)")
    workspace: Path = Field(default_factory=Path.cwd, description="the agents' working tree")
    state_dir: Path = Field(default_factory=default_state_dir, description="SQLite state")
    token: str | None = Field(
        None, repr=False, description="API token (required unless listening on loopback)"
    )
    sandbox_id: str = Field("local", description="this sandbox's id, reported with runs")
    dev_url_template: str = Field(
        "http://localhost:{port}", description="public URL of a port, e.g. https://{port}-x.dev"
    )
    log_level: LogLevel = "info"
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="request body cap")
    max_concurrent_runs: int = Field(8, ge=1, description="runs executing at once")
    max_queue: int = Field(64, ge=0, description="runs waiting for a slot before 429")
    shutdown_grace: float = Field(
        10.0, ge=0, description="seconds running runs get to finish on SIGTERM"
    )
    sse_ping_interval: float = Field(15.0, gt=0, description="seconds between `: ping`s")
    sse_retry_ms: int = Field(2000, ge=0, description="`retry:` sent to SSE clients")
    cors_origins: str = Field(
        "",
        description="origins allowed to call the API from a browser (comma-separated, or *; "
        "empty: none)",
    )
    webhook_secret: str | None = Field(
        None, repr=False, description="HMAC key for webhook signatures (default: the token)"
    )
    webhook_max_attempts: int = Field(5, ge=1)
    webhook_backoff: float = Field(1.0, ge=0, description="first retry delay, doubled each time")
    webhook_timeout: float = Field(10.0, gt=0, description="seconds per delivery attempt")
    record: Path | None = Field(
        None, description="append every model turn of every run to this cassette (JSONL)"
    )
    custom_tool_url_prefixes: str = Field(
        "",
        description="URL prefixes agents' custom tools may POST to (comma-separated, or * "
        "for any URL); empty: agents with custom tools are refused",
    )
    custom_tool_timeout: float = Field(
        30.0, gt=0, description="seconds one custom tool call may take"
    )
    control_plane: str | None = Field(
        None, description="agentd connect: the control plane's base URL (http or https)"
    )
    device_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._~-]{1,128}$", description="agentd connect: this device's id"
    )
    workspace_skip_dirs: str = Field(
        "",
        description="directory names whose file changes runs do not report (comma-separated; "
        "empty: .git, node_modules, caches and the like; off: no scan for command changes)",
    )
    default_model: str = Field(
        DEFAULT_MODEL, min_length=1, description="the model of agents defined without one"
    )
    public_url: str | None = Field(
        None,
        description="this daemon's public base URL (e.g. https://sbx-1.example.dev); makes "
        "the agents' `endpoint` absolute",
    )
    tool_hub_url: str | None = Field(
        None,
        description="the Tool Hub's base URL: an agent's tool name that is not a core tool is "
        "looked up at GET {hub}/tools/{slug} and called at POST {hub}/tools/{slug}/invoke",
    )

    @field_validator("workspace", "state_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("token", "webhook_secret", "public_url", "tool_hub_url", mode="after")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("public_url", "tool_hub_url", "control_plane", mode="after")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        if parts.query or parts.fragment:
            raise ValueError("must be a base URL without a query or fragment")
        return value.rstrip("/")

    @field_validator("custom_tool_url_prefixes", mode="after")
    @classmethod
    def _url_prefixes(cls, value: str) -> str:
        if value.strip():
            from tools.http_tool import UrlAllowList  # aiohttp: only when configured

            UrlAllowList.parse(value)  # a bad entry is a ValueError naming it
        return value

    @field_validator("device_id", mode="after")
    @classmethod
    def _path_segment(cls, value: str | None) -> str | None:
        # It is a segment of the link's URL path, where `.` and `..` would be resolved away.
        if value in (".", ".."):
            raise ValueError("must not be . or .. (it names this device in a URL path)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def allowed_origins(self) -> frozenset[str]:
        return frozenset(o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip())

    @property
    def custom_tool_allow_list(self) -> UrlAllowList:
        from tools.http_tool import UrlAllowList

        return UrlAllowList.parse(self.custom_tool_url_prefixes)

    @property
    def skip_dirs(self) -> frozenset[str] | None:
        """`ToolSettings.workspace_skip_dirs`: None turns the change scan off."""
        value = self.workspace_skip_dirs.strip()
        if value.lower() == "off":
            return None
        if not value:
            from tools.base import DEFAULT_SKIP_DIRS

            return DEFAULT_SKIP_DIRS
        return frozenset(name.strip() for name in value.split(",") if name.strip())

    @property
    def signing_key(self) -> str | None:
        return self.webhook_secret or self.token

    def check(self) -> None:
        """Raise ConfigError for settings the daemon must refuse to start with."""
        if self.token is None and not self.is_loopback:
            raise ConfigError(
                f"refusing to listen on {self.host} without an API token: anyone who can "
                "reach it could run commands in this sandbox. Set --token or AGENTD_TOKEN, "
                "or listen on 127.0.0.1"
            )
        try:
            # The placeholders tools/dev_url.py's build_url fills in.
            self.dev_url_template.format(port=1, sandboxId="s", host="h")
        except KeyError as exc:
            raise ConfigError(
                f"dev URL template {self.dev_url_template!r} is not valid: unknown "
                f"placeholder {{{exc.args[0]}}}; use {{port}}, and optionally {{sandboxId}} "
                "and {host}"
            ) from exc
        except (IndexError, ValueError, AttributeError, TypeError) as exc:  # {0}, {port.x}…
            raise ConfigError(
                f"dev URL template {self.dev_url_template!r} is not valid: {exc}; use "
                "{port}, and optionally {sandboxId} and {host}"
            ) from exc

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        """Defaults, then the environment, then `overrides` (flags; `None` values skipped).
        Raises ConfigError naming the flag or variable whose value is invalid."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name in cls.model_fields:
            for prefix in reversed(ENV_PREFIXES):  # AGENTD_ last, so it wins
                var = prefix + name.upper()
                if env.get(var, "") != "":
                    values[name] = env[var]
                    sources[name] = var
        for name, value in (overrides or {}).items():
            if value is not None:
                values[name] = value
                sources[name] = "--" + name.replace("_", "-")
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                name = str(err["loc"][0]) if err["loc"] else "settings"
                where = sources.get(name, name)
                message = str(err["msg"]).removeprefix("Value error, ")
                problems.append(f"{where}: {message} (got {err.get('input')!r})")
            raise ConfigError("invalid settings: " + "; ".join(problems)) from exc


def env_names(field: str) -> list[str]:
    """The environment variables that set `field`, strongest first."""
    return [prefix + field.upper() for prefix in ENV_PREFIXES]


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
