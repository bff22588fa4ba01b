"""Success bodies: a body that grows with the work is built and encoded off the event loop."""

from __future__ import annotations

import json
import threading

from runtime.api.responses import json_data, json_data_off_loop
from runtime.messages import Message


async def test_a_large_body_is_built_and_encoded_in_a_worker_thread() -> None:
    built_on: list[threading.Thread] = []
    messages = [Message.user(f"message {i}") for i in range(2_000)]

    def body() -> dict[str, object]:
        built_on.append(threading.current_thread())
        return {"id": "thr_1", "messages": [m.model_dump(mode="json") for m in messages]}

    response = await json_data_off_loop(body, headers={"X-Thread-ID": "thr_1"})
    assert built_on and built_on[0] is not threading.main_thread()
    assert response.status == 200 and response.content_type == "application/json"
    assert response.headers["X-Thread-ID"] == "thr_1"
    # The same bytes the loop's own json_data makes.
    assert response.text == json_data(body()).text
    data = json.loads(response.text or "")["data"]
    assert len(data["messages"]) == 2_000 and data["messages"][-1]["content"][0]["text"] == (
        "message 1999"
    )
