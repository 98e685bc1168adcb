"""`watchkeeper stats`: outcome figures from the log, per service, runbook or severity."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from daemon.cli.client import client, emit, out


def _d(dist: dict[str, Any]) -> str:
    if not dist.get("count"):
        return "-"
    return f"{_s(dist['p50'])} / {_s(dist['p90'])} (n={dist['count']})"


def _s(seconds: float) -> str:
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            rest = s % size
            return f"{s // size}{unit}" + (f"{rest // 60}m" if unit == "h" and rest >= 60 else "")
    return f"{s}s"


def register(app: typer.Typer) -> None:
    """Add `stats` to the top-level app."""

    @app.command()
    def stats(
        by: Annotated[
            str, typer.Option("--by", help="service, runbook, severity or all")
        ] = "service",
        since: Annotated[
            str, typer.Option("--since", help="A duration back from now (7d) or a time.")
        ] = "30d",
        until: Annotated[str, typer.Option("--until", help="End of the period.")] = "",
    ) -> None:
        """Time to acknowledge, approve and resolve; what proposals and actions came to."""
        params = {"by": by, "since": since, "until": until}
        data = client.request("GET", "/api/v1/stats", params=params)
        if emit(data):
            return
        t = Table(title=f"outcomes by {data['by']} since {data['since'] or 'the start'}")
        for col in (
            data["by"],
            "incidents",
            "ack p50/p90",
            "approve p50/p90",
            "resolve p50/p90",
            "concluded/escalated",
            "approved/rejected/expired",
            "succeeded/verified/rolled back",
            "reopened",
        ):
            t.add_column(col)
        for key, g in data["groups"].items():
            a, inv = g["actions"], g["investigations"]
            t.add_row(
                key,
                str(g["incidents"]),
                _d(g["time_to_acknowledge"]),
                _d(g["time_to_approve"]),
                _d(g["time_to_resolve"]),
                f"{inv['concluded']}/{inv['escalated']}",
                f"{a['approved']}/{a['rejected']}/{a['expired']}",
                f"{a['succeeded']}/{a['verified']}/{a['rolled_back']}",
                str(g["reopened_within_a_day_after_an_action"]),
            )
        out.print(t)
