"""CLI contexts, like kubectl's: a named daemon URL and the person's own token, kept in
`~/.config/watchkeeper/cli.yaml` (or `$WATCHKEEPER_CLI_CONFIG`), readable by its owner only.

`watchkeeper context set prod --url https://wk.example --token-file ~/wk-token` stores one;
`context use prod` makes it current; `--context NAME` (or `WATCHKEEPER_CONTEXT`) picks one
for a single command. `--url`/`--token` and their environment variables still win.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from daemon.cli.client import emit, fail, out

context_app = typer.Typer(help="Named daemons and your token for each.", no_args_is_help=True)


def config_path() -> Path:
    """Where contexts are kept."""
    explicit = os.environ.get("WATCHKEEPER_CLI_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "watchkeeper" / "cli.yaml"


def load() -> dict[str, Any]:
    """The contexts file ({} when there is none); a broken one is an error that says where."""
    path = config_path()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return {"contexts": {}}
    except (OSError, yaml.YAMLError) as e:
        fail(f"cannot read CLI contexts from {path}: {e}")
    if not isinstance(data, dict) or not isinstance(data.get("contexts", {}), dict):
        fail(f"{path}: expected `contexts:` mapping names to {{url, token}}")
    data.setdefault("contexts", {})
    return data


def save(data: dict[str, Any]) -> None:
    """Write the contexts file, owner-only (it holds tokens)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(data, f, sort_keys=True)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def chosen(name: str | None) -> dict[str, Any] | None:
    """The context asked for (or the current one), None when there is none.

    Without a name asked for, an unreadable file is no reason to stop a command (a service
    running `watchkeeper run` may have no readable home).
    """
    if name is None:
        try:
            data = yaml.safe_load(config_path().read_text()) or {}
        except (OSError, yaml.YAMLError):
            return None
        current = data.get("current") if isinstance(data, dict) else None
        contexts = data.get("contexts") if isinstance(data, dict) else None
        found = contexts.get(current) if isinstance(contexts, dict) and current else None
        return dict(found) if isinstance(found, dict) else None
    data = load()
    pick = name or data.get("current")
    if not pick:
        return None
    ctx = data["contexts"].get(pick)
    if ctx is None:
        known = ", ".join(sorted(data["contexts"])) or "none"
        fail(f"no CLI context {pick!r} (known: {known}); see `watchkeeper context list`")
    return dict(ctx)


@context_app.command("set")
def set_context(  # noqa: PLR0917 - one parameter per command-line option
    name: Annotated[str, typer.Argument(help="A name such as prod or staging.")],
    url: Annotated[str, typer.Option("--url", help="Daemon URL.")],
    token: Annotated[str | None, typer.Option("--token", help="Your bearer token.")] = None,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="Read your token from this file.")
    ] = None,
    token_stdin: Annotated[
        bool, typer.Option("--token-stdin", help="Read your token from standard input.")
    ] = False,
    use: Annotated[bool, typer.Option("--use/--no-use", help="Make it current.")] = True,
) -> None:
    """Store (or replace) a context: a daemon URL and your token for it."""
    secret = token
    if token_file is not None:
        try:
            secret = token_file.read_text().strip()
        except OSError as e:
            fail(f"--token-file {token_file}: {e.strerror}")
    if token_stdin:
        secret = sys.stdin.readline().strip()
    data = load()
    entry: dict[str, Any] = {"url": url.rstrip("/")}
    if secret:
        entry["token"] = secret
    data["contexts"][name] = entry
    if use or not data.get("current"):
        data["current"] = name
    save(data)
    out.print(
        f"context {name} → {entry['url']}" + (" (current)" if data["current"] == name else ""),
        highlight=False,
    )


@context_app.command("use")
def use_context(name: Annotated[str, typer.Argument()]) -> None:
    """Make a context the current one."""
    data = load()
    if name not in data["contexts"]:
        fail(f"no CLI context {name!r}; add it with `watchkeeper context set {name} --url …`")
    data["current"] = name
    save(data)
    out.print(f"now using {name}", highlight=False)


@context_app.command("list")
def list_contexts() -> None:
    """The contexts (tokens are never shown)."""
    data = load()
    rows = [
        {
            "name": n,
            "url": c.get("url", ""),
            "token": bool(c.get("token")),
            "current": n == data.get("current"),
        }
        for n, c in sorted(data["contexts"].items())
    ]
    if emit({"contexts": rows}):
        return
    t = Table(title=str(config_path()))
    for col in ("", "name", "url", "token"):
        t.add_column(col)
    for r in rows:
        t.add_row("*" if r["current"] else "", r["name"], r["url"], "yes" if r["token"] else "-")
    out.print(t)


@context_app.command("delete")
def delete_context(name: Annotated[str, typer.Argument()]) -> None:
    """Forget a context and its token."""
    data = load()
    if data["contexts"].pop(name, None) is None:
        fail(f"no CLI context {name!r}")
    if data.get("current") == name:
        data.pop("current")
    save(data)
    out.print(f"deleted {name}", highlight=False)
