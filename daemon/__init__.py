"""watchkeeper: an event-sourced daemon for alerts, incidents and on-call work."""

from __future__ import annotations


def installed_version() -> str:
    """The installed distribution's version (CLI, /metrics build info, /api/v2/status)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("watchkeeper")
    except PackageNotFoundError:  # a checkout that was never installed
        return "unknown (not installed)"
