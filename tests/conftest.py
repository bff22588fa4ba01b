"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme


@pytest.fixture(scope="session", autouse=True)
def own_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The tests, and every process they start, have a HOME of their own. Commands run as
    login shells (exec_command's default), which read ~/.profile: a developer's profile is
    not part of what is tested, and this machine's (pyenv's rehash) can wait a minute on a
    lock a killed shell left behind."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        yield


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA (`ca.pem`) and a certificate it issued to 127.0.0.1 (`server.pem`,
    `server.key`): what `SSL_CERT_FILE` names to make a server on 127.0.0.1 trusted."""
    where = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1")
    authority.cert_pem.write_to_path(str(where / "ca.pem"))
    issued.private_key_pem.write_to_path(str(where / "server.key"))
    with open(where / "server.pem", "wb") as chain:
        for blob in issued.cert_chain_pems:
            chain.write(blob.bytes())
    return where
