"""Authoring source of the offline demo's cassette (runtime/demo/cassette.jsonl).

The demo's "model" is scripted here: what it says, thinks and which tools it calls, with the
app it writes taken from tests/fakes/demo_app/. `build_cassette()` turns the script into
cassette lines with the same request fingerprints a recording of the run would carry, and
tests/cli/test_demo.py checks the shipped cassette is exactly what this produces, so the two
cannot drift apart. Regenerate after editing: `python -m tests.fakes.demo_cassette`.
"""

from __future__ import annotations

from pathlib import Path

from runtime.demo import CASSETTE_PATH, DEMO_PROMPT, DEMO_SYSTEM_PROMPT, DEMO_TOOLS
from runtime.messages import Message, TextPart, ThinkingPart, ToolCallPart, ToolResultPart
from runtime.providers.base import AssistantTurn, Usage
from runtime.providers.replay import CASSETTE_HEADER, request_fingerprint, turn_to_line

APP_DIR = Path(__file__).resolve().parent / "demo_app"
APP_FILES = ("app.py", "index.html", "test_app.py")
MODEL = "claude-sonnet-4-5 (scripted)"


def _add_files_patch() -> str:
    lines = ["*** Begin Patch"]
    for name in APP_FILES:
        lines.append(f"*** Add File: {name}")
        lines.extend("+" + line for line in (APP_DIR / name).read_text().splitlines())
    lines.append("*** End Patch")
    return "\n".join(lines) + "\n"


def demo_turns() -> list[AssistantTurn]:
    def turn(*parts: object, stop: str = "tool_use", out: int = 60) -> AssistantTurn:
        return AssistantTurn(
            content=list(parts),  # type: ignore[arg-type]
            stop_reason=stop,  # type: ignore[arg-type]
            usage=Usage(input_tokens=1800, output_tokens=out, cached_input_tokens=1500),
            model=MODEL,
        )

    return [
        turn(
            ThinkingPart(
                thinking="A stdlib http.server app keeps this dependency-free: app.py serves "
                "index.html and a JSON API, test_app.py exercises it on an ephemeral port.",
                signature="scripted-demo-signature",
            ),
            TextPart(text="I'll write the app, its page and its tests in one patch."),
            ToolCallPart(id="call_1", name="apply_patch", arguments={"input": _add_files_patch()}),
            out=900,
        ),
        turn(
            TextPart(text="Now the tests."),
            ToolCallPart(
                id="call_2",
                name="exec_command",
                arguments={"cmd": "python3 -m unittest -v test_app", "yield_time_ms": 20000},
            ),
        ),
        turn(
            TextPart(text="Tests pass. Starting the server on a free port."),
            ToolCallPart(
                id="call_3",
                name="exec_command",
                arguments={"cmd": "python3 app.py", "yield_time_ms": 1000},
            ),
        ),
        turn(
            ToolCallPart(id="call_4", name="get_dev_url", arguments={"wait_ms": 10000}),
        ),
        turn(
            TextPart(
                text="Done. The notes app is running: open the dev URL above to add and list "
                'notes. The API is at /api/notes (GET, POST {"text": …}) and /api/health; '
                "`python3 -m unittest test_app` runs its three tests."
            ),
            stop="end_turn",
            out=80,
        ),
    ]


def build_cassette() -> str:
    tools = [{"name": name} for name in DEMO_TOOLS]
    conversation = [Message.user(DEMO_PROMPT)]
    lines = [CASSETTE_HEADER, "# The offline demo (source: tests/fakes/demo_cassette.py)."]
    for number, turn in enumerate(demo_turns(), start=1):
        request = request_fingerprint(DEMO_SYSTEM_PROMPT, conversation, tools)
        lines.append(turn_to_line(number, request, turn, [None] * len(turn.content)))
        conversation.append(Message(role="assistant", content=turn.content))
        if turn.tool_calls:
            results = [
                ToolResultPart(call_id=c.id, output="", name=c.name) for c in turn.tool_calls
            ]
            conversation.append(Message(role="tool", content=results))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    CASSETTE_PATH.write_text(build_cassette())
    print(f"wrote {CASSETTE_PATH}")
