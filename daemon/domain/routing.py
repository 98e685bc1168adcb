"""Which runbooks investigate an incident: a tree of label matchers, like Alertmanager's routes.

A route matches when all its matchers match. Children are tried in order and the first
matching child wins, unless it says `continue: true`, in which case later siblings are
tried too. A matching route with no matching child contributes its own runbook. When
nothing matches, the tree's default runbook is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from daemon.domain.matchers import Matcher, matches_all


def _parse_matchers(value: Any) -> Any:
    """Accept matchers as strings (`severity=~"crit.*"`) as well as objects."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, dict) and "name" not in value:
        # {alertname: X, severity: critical} reads as equality matchers.
        return [Matcher(name=str(k), op="=", value=str(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [Matcher.parse(m) if isinstance(m, str) else m for m in value]
    return value


class Route(BaseModel):
    """One node of the tree: matchers, an optional runbook, child routes, and `continue`."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    match: tuple[Matcher, ...] = ()
    runbook: str | None = None
    routes: tuple[Route, ...] = ()
    continue_: bool = Field(default=False, alias="continue")

    _matchers = field_validator("match", mode="before")(_parse_matchers)


class RouteTree(BaseModel):
    """Top-level routes tried in order, and the runbook used when none matches."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    routes: tuple[Route, ...] = ()
    default: str | None = None


def _walk(route: Route, labels: Mapping[str, str]) -> list[str] | None:
    """Runbooks selected under `route`, or None when `route` does not match."""
    if not matches_all(route.match, labels):
        return None
    found = _children(route.routes, labels)
    if found:
        return found
    return [route.runbook] if route.runbook else []


def _children(routes: tuple[Route, ...], labels: Mapping[str, str]) -> list[str]:
    found: list[str] = []
    for child in routes:
        hit = _walk(child, labels)
        if hit is None:
            continue
        found += [r for r in hit if r not in found]
        if not child.continue_:
            break
    return found


def route(tree: RouteTree, labels: Mapping[str, str]) -> tuple[str, ...]:
    """Runbook ids for an incident with these labels, in route order (default if none)."""
    found = _children(tree.routes, labels)
    if not found and tree.default:
        found = [tree.default]
    return tuple(found)


def with_runbook_matches(
    tree: RouteTree, runbook_matches: Mapping[str, tuple[Matcher, ...]]
) -> RouteTree:
    """The configured tree followed by one route per runbook built from its own `match`.

    Configured routes come first, so an operator can always override what a runbook
    claims; runbooks with no matchers never match on their own.
    """
    extra = tuple(Route(match=m, runbook=rid) for rid, m in runbook_matches.items() if m)
    return RouteTree(routes=tree.routes + extra, default=tree.default)
