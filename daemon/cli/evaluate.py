"""`watchkeeper eval`: replay recorded incidents against the runbooks (and a model), score them."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from daemon.agent.evaluation import (
    EvalReport,
    ScenarioError,
    ScenarioScore,
    evaluate,
    find_scenarios,
)
from daemon.agent.replay import ReplayError
from daemon.config.agent import LLMConfig
from daemon.runbooks.runbook import SHIPPED, load_runbooks
from daemon.runbooks.tools import Tool

out = Console()
err = Console(stderr=True)


def promql_tools(url: str) -> dict[str, Tool]:
    """The daemon's own PromQL tools, pointed at the replay Prometheus."""
    from daemon.config.settings import Settings
    from daemon.runtime.wiring import build_tools

    tools = build_tools(Settings(), prometheus_url=url)
    return {k: v for k, v in tools.items() if k.startswith("promql_")}


def _mark(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "NO")


def _pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.0f}%)" if d else "-"


def report_table(rep: EvalReport) -> Table:
    """One row per scenario, then the totals."""
    t = Table(title=f"eval: {rep.model} ({len(rep.scores)} scenarios)")
    t.add_column("scenario", overflow="fold")
    for col in (
        "kind",
        "cause",
        "action",
        "FP",
        "proposed",
        "escalated",
        "steps",
        "tokens",
        "cost",
        "secs",
    ):
        t.add_column(col)
    for s in rep.scores:
        t.add_row(
            s.scenario,
            s.kind,
            _mark(s.cause_found),
            "ERROR" if s.error else _mark(s.action_correct),
            str(s.false_positives),
            ", ".join(s.proposed) or "-",
            "yes" if s.escalated else "",
            str(s.steps),
            str(s.tokens),
            f"{s.cost:.4f}",
            f"{s.seconds:.1f}",
        )
    tot = rep.totals
    t.add_section()
    t.add_row(
        "total",
        "",
        _pct(tot.cause_found, tot.cause_expected),
        _pct(tot.action_correct, tot.scenarios),
        str(tot.false_positives),
        "",
        str(tot.escalated),
        str(tot.steps),
        str(tot.tokens),
        f"{tot.cost:.4f}",
        f"{tot.seconds:.1f}",
    )
    return t


def compare_table(a: EvalReport, b: EvalReport, name_a: str, name_b: str) -> Table:
    """Side by side: each scenario's action/cause/FP under A and B, then the totals."""
    t = Table(title=f"A = {name_a} ({a.model})  vs  B = {name_b} ({b.model})")
    t.add_column("scenario", overflow="fold")
    for col in (
        "action A",
        "action B",
        "cause A",
        "cause B",
        "FP A",
        "FP B",
        "tokens A",
        "tokens B",
    ):
        t.add_column(col)
    by_b: dict[str, ScenarioScore] = {s.scenario: s for s in b.scores}
    names = [s.scenario for s in a.scores] + [
        n for n in by_b if n not in {s.scenario for s in a.scores}
    ]
    by_a = {s.scenario: s for s in a.scores}
    for n in names:
        sa, sb = by_a.get(n), by_b.get(n)
        t.add_row(
            n,
            _mark(sa.action_correct) if sa else "",
            _mark(sb.action_correct) if sb else "",
            _mark(sa.cause_found) if sa else "",
            _mark(sb.cause_found) if sb else "",
            str(sa.false_positives) if sa else "",
            str(sb.false_positives) if sb else "",
            str(sa.tokens) if sa else "",
            str(sb.tokens) if sb else "",
        )
    ta, tb = a.totals, b.totals
    t.add_section()
    t.add_row(
        "total",
        _pct(ta.action_correct, ta.scenarios),
        _pct(tb.action_correct, tb.scenarios),
        _pct(ta.cause_found, ta.cause_expected),
        _pct(tb.cause_found, tb.cause_expected),
        str(ta.false_positives),
        str(tb.false_positives),
        str(ta.tokens),
        str(tb.tokens),
    )
    return t


def _load_report(path: Path) -> EvalReport:
    try:
        return EvalReport.model_validate_json(path.read_text())
    except (OSError, ValueError) as e:
        err.print(f"{path}: not an eval report (-o json output): {e}", highlight=False)
        raise typer.Exit(2) from None


def eval_command(  # noqa: PLR0917 - typer maps each parameter to an option
    scenarios: Annotated[
        list[Path] | None,
        typer.Argument(help="Scenario directories (default: every shipped scenario)."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model name; without it, the deterministic path.")
    ] = None,
    base_url: Annotated[
        str, typer.Option("--base-url", help="OpenAI-compatible endpoint for --model.")
    ] = "http://127.0.0.1:11434/v1",
    api_key: Annotated[str, typer.Option("--api-key", envvar="WATCHKEEPER_EVAL_API_KEY")] = "",
    price_prompt: Annotated[
        float, typer.Option("--price-prompt", help="Cost per 1000 prompt tokens, for the cost.")
    ] = 0.0,
    price_completion: Annotated[
        float, typer.Option("--price-completion", help="Cost per 1000 completion tokens.")
    ] = 0.0,
    runbooks: Annotated[
        Path | None, typer.Option("--runbooks", help="Runbook directory (default: shipped).")
    ] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="table or json")] = "table",
    compare: Annotated[
        tuple[Path, Path] | None,
        typer.Option("--compare", help="Compare two saved JSON reports (A B) instead."),
    ] = None,
) -> None:
    """Replay recorded incidents on a real Prometheus and score cause, action, false positives."""
    if output not in ("table", "json"):
        err.print("-o must be table or json", highlight=False)
        raise typer.Exit(2)
    if compare is not None:
        a, b = (_load_report(p) for p in compare)
        if output == "json":
            typer.echo(
                json.dumps(
                    {"a": a.model_dump(mode="json"), "b": b.model_dump(mode="json")}, indent=1
                )
            )
        else:
            out.print(compare_table(a, b, str(compare[0]), str(compare[1])))
        return
    lib = load_runbooks(runbooks or SHIPPED)
    for p in lib.problems:
        err.print(f"runbook skipped: {p}", highlight=False)
    try:
        found = find_scenarios(list(scenarios or []))
    except ScenarioError as e:
        err.print(str(e), highlight=False)
        raise typer.Exit(2) from None
    llm = (
        LLMConfig(
            base_url=base_url,
            model=model,
            max_retries=1,
            price_prompt_per_1k=price_prompt,
            price_completion_per_1k=price_completion,
        )
        if model
        else None
    )

    def progress(s: ScenarioScore) -> None:
        if output == "table":
            err.print(f"  {s.scenario}: action {_mark(s.action_correct)}", highlight=False)

    try:
        rep = asyncio.run(
            evaluate(
                found,
                lib,
                promql_tools,
                llm=llm,
                api_key=api_key,
                now=datetime.now(UTC),
                progress=progress,
            )
        )
    except ReplayError as e:
        err.print(f"cannot replay: {e}", highlight=False)
        raise typer.Exit(2) from None
    if output == "json":
        typer.echo(rep.model_dump_json(indent=1))
    else:
        out.print(report_table(rep))
    if rep.totals.errors:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `eval` to the command."""
    app.command("eval")(eval_command)
