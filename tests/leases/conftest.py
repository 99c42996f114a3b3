import pytest

from .support import Child, Events, FakeKnobs, new_book


@pytest.fixture
def children():
    made = []

    def make(*argv):
        child = Child(*argv)
        made.append(child)
        return child

    yield make
    for child in made:
        child.kill()


@pytest.fixture
def device():
    return FakeKnobs()


@pytest.fixture
def events():
    return Events()


@pytest.fixture
def lease_dir(tmp_path):
    return tmp_path / "leases"


@pytest.fixture
def book(lease_dir, device, events):
    book = new_book(lease_dir, device, events)
    yield book
    book.stop(keep_leases=True)
