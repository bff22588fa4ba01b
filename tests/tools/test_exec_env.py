"""What the agent's commands see of the daemon's environment, and which tools are default."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.base import Toolbox, core_tool_names, default_tool_names


async def test_daemon_credentials_are_not_visible_to_commands(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-daemon")
    monkeypatch.setenv("AGENTD_TOKEN", "daemon-token")
    monkeypatch.setenv("SOME_AUTH_TOKEN", "hidden")
    monkeypatch.setenv("HARMLESS_SETTING", "visible")
    cmd = (
        "echo key=${ANTHROPIC_API_KEY:-unset} token=${AGENTD_TOKEN:-unset} "
        "auth=${SOME_AUTH_TOKEN:-unset} plain=${HARMLESS_SETTING:-unset} "
        "mine=${OPENAI_API_KEY:-unset}"
    )
    async with Toolbox(workspace, env={"OPENAI_API_KEY": "agent-own-key"}) as box:
        result = await box.call("exec_command", {"cmd": cmd, "login": False})
    assert not result.is_error, result.output
    assert result.data["output"].strip() == (
        "key=unset token=unset auth=unset plain=visible mine=agent-own-key"
    )


async def test_the_bash_alias_is_offered_only_when_listed(workspace: Path) -> None:
    assert "bash" in core_tool_names() and "bash" not in default_tool_names()
    async with Toolbox(workspace) as box:
        assert "bash" not in [spec["name"] for spec in box.specs()]
        assert "exec_command" in [spec["name"] for spec in box.specs()]
        refused = await box.call("bash", {"command": "true"})
        assert refused.is_error and "Unknown tool 'bash'" in refused.output
    async with Toolbox(workspace, enabled=["bash"]) as box:
        ran = await box.call("bash", {"command": "echo alias"})
        assert not ran.is_error and "alias" in ran.output
