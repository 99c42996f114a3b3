import pytest

from .fakes import Rig


@pytest.fixture(autouse=True, params=[True, False], ids=["fast-lane", "falcon"])
def serving(request, monkeypatch) -> bool:
    """Every API test runs twice: hot routes through the fast lane, and all through Falcon."""
    monkeypatch.setattr(Rig, "fast_lane", request.param)
    return request.param


@pytest.fixture
def rig() -> Rig:
    return Rig()
