"""Which conversation a fork may start from, checked without a run manager."""

from __future__ import annotations

import pytest

from runtime.messages import Message, TextPart, ToolCallPart, ToolResultPart
from runtime.runs.errors import InvalidRequest
from runtime.runs.forking import cut_conversation

CONVERSATION = [
    Message.user("list the files"),
    Message(role="assistant", content=[ToolCallPart(id="c1", name="list_dir", arguments={})]),
    Message(role="tool", content=[ToolResultPart(call_id="c1", output="a.txt")]),
    Message(role="assistant", content=[TextPart(text="There is a.txt.")]),
]


def test_a_fork_keeps_the_first_step_messages() -> None:
    assert cut_conversation(CONVERSATION, 3, None) == CONVERSATION[:3]
    assert cut_conversation(CONVERSATION, 4, "and now?") == CONVERSATION
    assert cut_conversation(CONVERSATION, 0, "start over") == []


@pytest.mark.parametrize(
    ("step", "prompt", "says"),
    [
        (5, "x", "step must be between 0 and 4"),
        (-1, "x", "step must be between 0 and 4"),
        (2, "x", "fork at step 3 or 1"),  # would cut off the results of c1
        (4, None, "without a prompt"),  # ends with the assistant: nothing to answer
        (0, None, "message 0 is missing"),
    ],
)
def test_a_fork_that_cannot_continue_is_refused_with_a_reason(
    step: int, prompt: str | None, says: str
) -> None:
    with pytest.raises(InvalidRequest, match=says):
        cut_conversation(CONVERSATION, step, prompt)
