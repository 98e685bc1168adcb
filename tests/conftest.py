"""Shared fixtures for the test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import realstack


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
