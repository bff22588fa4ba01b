"""`--help` of every command is complete: it exits 0 and explains every argument the parser
defines (walking the parser's actions, so a flag added without help text fails here)."""

from __future__ import annotations

import argparse
import subprocess

import pytest

from runtime.cli import build_parser, main
from runtime.demo import LIVE_MODELS
from tests.cli.support import agentd_argv, clean_env


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # argparse wraps help at the terminal width and may break at hyphens; a wide terminal
    # keeps every sentence on one line so it can be found verbatim.
    monkeypatch.setenv("COLUMNS", "400")


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, parser in commands().items():
        assert name in out
        assert parser.description, f"agentd {name} has no description"


@pytest.mark.parametrize("command", sorted(commands()))
def test_help_explains_every_argument(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = commands()[command]
    assert main([command, "--help"]) == 0
    out = flat(capsys.readouterr().out)
    assert flat(parser.description or "") in out
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        label = "/".join(action.option_strings) or action.dest
        assert action.help and action.help != argparse.SUPPRESS, f"{command}: {label} has no help"
        assert flat(action.help) in out, f"{command}: help of {label} is not shown"
        for name in action.option_strings or [action.metavar or action.dest]:
            assert str(name) in out


def test_demo_help_names_the_live_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    for key, model in LIVE_MODELS.items():
        assert f"{model} with {key}" in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["no-such-command"]) == 2
    assert main(["run"]) == 2  # the prompt is required
    assert main(["tool"]) == 2  # so is the tool name
    assert "usage: agentd" in capsys.readouterr().err


def test_console_script_help() -> None:
    result = subprocess.run(
        [*agentd_argv(), "--help"], env=clean_env(), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: agentd")


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--port", "0", "--token", "t"],
        ["connect", "--device-id", "d"],
        ["run", "hello"],
        ["demo", "--exit"],
        ["tool", "list_dir", "{}"],
        ["runs"],
        ["threads"],
    ],
)
def test_a_command_parses_alike_with_its_own_parser_alone(argv: list[str]) -> None:
    """`main` parses a known command with that command's parser alone (building them all
    cost every start a few ms): the arguments come out as the whole parser gives them."""
    alone = build_parser(argv[0])
    assert vars(alone.parse_args(argv)) == vars(build_parser().parse_args(argv))


def test_an_unknown_command_is_told_with_every_command_listed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serv"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'serv'" in err
    for name in commands():
        assert name in err
