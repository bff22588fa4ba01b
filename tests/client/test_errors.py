"""Every error of `runtime.client` has `code`, `message` and `request_id`, as the README
says: a caller can handle them alike, whether the daemon answered or could not be reached."""

from __future__ import annotations

import pytest

from runtime.client import AgentdError, AsyncClient, Client, NetworkError, NotFoundError
from tests.api.conftest import Daemon
from tests.cli.support import free_port


async def test_a_network_error_has_code_message_and_request_id() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncClient(url, max_retries=0) as agentd:
        with pytest.raises(AgentdError) as failed:
            await agentd.runs.list()
    error = failed.value
    assert isinstance(error, NetworkError)
    assert error.code == "network_error"
    assert error.request_id is None
    assert error.message == str(error) and url in error.message


def test_the_blocking_client_s_network_error_has_them_too() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", max_retries=0) as agentd:
        with pytest.raises(NetworkError) as failed:
            agentd.threads.list()
    assert (failed.value.code, failed.value.request_id) == ("network_error", None)


async def test_an_api_error_has_the_same_three(daemon: Daemon) -> None:
    async with AsyncClient(daemon.url, max_retries=0) as agentd:
        with pytest.raises(AgentdError) as failed:
            await agentd.runs.get("run_missing")
    error = failed.value
    assert isinstance(error, NotFoundError)
    assert error.code and error.message and error.request_id
