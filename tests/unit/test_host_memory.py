import sys

import pytest

from rt_lightning.host_memory import reuse_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_applies_on_glibc_and_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("RT_LIGHTNING_SYSTEM_MALLOC", "1")
    assert reuse_freed_memory() is False
    monkeypatch.delenv("RT_LIGHTNING_SYSTEM_MALLOC")
    assert reuse_freed_memory() is True
