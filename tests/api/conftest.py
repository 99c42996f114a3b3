import pytest

from .fakes import Rig


@pytest.fixture
def rig() -> Rig:
    return Rig()
