"""One resolver for every secret in the configuration (a leaf: it imports nothing of ours)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path


def resolve_secret(value: str) -> str:
    """Resolve `env:NAME`, `file:/path` or `credential:NAME`; anything else is the literal."""
    kind, _, ref = value.partition(":")
    if kind == "env" and ref:
        if ref not in os.environ:
            raise ValueError(f"environment variable {ref} is not set")
        return os.environ[ref]
    if kind == "file" and ref:
        try:
            return Path(ref).read_text().strip()
        except OSError as e:
            raise ValueError(f"cannot read secret file {ref}: {e.strerror}") from e
    if kind == "credential" and ref:
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if not creds:
            raise ValueError(
                f"credential {ref} requested but CREDENTIALS_DIRECTORY is not set "
                "(add LoadCredential= to the unit, or use env:/file:)"
            )
        try:
            return (Path(creds) / ref).read_text().strip()
        except OSError as e:
            raise ValueError(f"cannot read credential {ref}: {e.strerror}") from e
    return value


def unresolved(refs: Iterable[tuple[str, str]]) -> list[str]:
    """`path: reason` for each (path in the file, secret reference) that does not resolve."""
    problems = []
    for path, ref in refs:
        try:
            resolve_secret(ref)
        except ValueError as e:
            problems.append(f"{path}: {e}")
    return problems


def resolved(refs: Iterable[tuple[str, str]]) -> list[str]:
    """The value of each (path, secret reference) that resolves, e.g. to scrub them from logs."""
    out = []
    for _, ref in refs:
        with contextlib.suppress(ValueError):
            out.append(resolve_secret(ref))
    return out
