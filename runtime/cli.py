"""The `agentd` command line.

Each subcommand is a `add_<name>_parser(subparsers)` that registers its flags and sets
`func` to a `cmd_<name>(args) -> int`; `build_parser()` lists them. Add a command by writing
those two functions and calling the first from `build_parser()`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from runtime.config import ConfigError, Settings, env_names

# Settings that `agentd serve` takes as flags (all of them), in --help order.
SERVE_FIELDS = (
    "host",
    "port",
    "workspace",
    "state_dir",
    "token",
    "sandbox_id",
    "dev_url_template",
    "log_level",
    "max_body_bytes",
    "max_concurrent_runs",
    "max_queue",
    "shutdown_grace",
    "sse_ping_interval",
    "sse_retry_ms",
    "cors_origins",
    "webhook_secret",
    "webhook_max_attempts",
    "webhook_backoff",
    "webhook_timeout",
)


def add_settings_flags(parser: argparse.ArgumentParser, fields: Sequence[str]) -> None:
    """One `--flag` per setting, defaulting to None so the environment and the defaults
    apply (`Settings.load` does the layering and the validation)."""
    for name in fields:
        info = Settings.model_fields[name]
        default = info.get_default(call_default_factory=False)
        shown = "the current directory" if name == "workspace" else default
        if name == "state_dir":
            shown = "~/.local/state/agentd"
        text = info.description or name.replace("_", " ")
        env = " or ".join(env_names(name))
        parts = [text, f"env: {env}"]
        if shown is not None and name not in ("token", "webhook_secret"):
            parts.append(f"default: {shown}")
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            metavar=name.split("_")[-1].upper(),
            help="; ".join(parts),
        )


def settings_from_args(args: argparse.Namespace, fields: Sequence[str]) -> Settings:
    overrides: dict[str, Any] = {name: getattr(args, name, None) for name in fields}
    return Settings.load(overrides)


# -- serve -----------------------------------------------------------------------------------


def add_serve_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTP API daemon",
        description="Serve the agentd HTTP API (DESIGN §3) until SIGTERM/SIGINT. Without a "
        "token it listens only on loopback.",
    )
    add_settings_flags(parser, SERVE_FIELDS)
    parser.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args, SERVE_FIELDS)
        settings.check()
        if not settings.workspace.is_dir():
            raise ConfigError(f"workspace {settings.workspace} is not a directory")
    except ConfigError as exc:
        print(f"agentd serve: {exc}", file=sys.stderr)
        return 2
    from runtime.daemon import configure_logging, serve

    configure_logging(settings.log_level)
    try:
        return asyncio.run(serve(settings))
    except OSError as exc:  # e.g. the port is taken
        print(
            f"agentd serve: cannot listen on {settings.host}:{settings.port}: {exc}",
            file=sys.stderr,
        )
        return 1


# -- entry point -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentd", description="agentd: the in-sandbox agent runtime daemon"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_serve_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
