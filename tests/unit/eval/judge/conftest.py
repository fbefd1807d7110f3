"""The loopback judge server, started per test with the test API key in the environment."""

import pytest

from tests.unit.eval.judge.scripted_server import KEY_ENV, SECRET, start_server


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    srv, _ = start_server()
    yield srv
    srv.shutdown()
    srv.server_close()
