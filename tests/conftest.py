"""Shared fixtures for the test suite."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
import realstack
from realstack import C, Starter

# pytest-xdist's workers inherit COLUMNS=80; Rich freezes a console's width from COLUMNS when
# the CLI module is first imported, so a table would wrap by which test imported it first.
os.environ.pop("COLUMNS", None)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[realstack.PostgresServer]:
    """One PostgreSQL for the session: a private instance, else the machine's; skip if neither."""
    try:
        cm = realstack.postgres_server()
        server = cm.__enter__()
    except realstack.Unavailable as e:
        pytest.skip(f"PostgreSQL is not available: {e}")
    try:
        yield server
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture
def started(request: pytest.FixtureRequest) -> Starter:
    """`started(lambda: Mosquitto(...))`: made and started for this test, stopped after it;
    the test is skipped if the component is not installed (`realstack.Unavailable`)."""

    def start(make: Callable[[], C]) -> C:
        try:
            component = make()
            component.start()
        except realstack.Unavailable as e:
            pytest.skip(str(e))
        request.addfinalizer(component.stop)
        return component

    return start
