"""Global options anywhere on the line, as kubectl and amtool take them.

`watchkeeper incidents list --url http://ops1:9797 -o json` means the same as
`watchkeeper --url http://ops1:9797 -o json incidents list`. Click only reads a group's
options before its subcommand, so the line is rearranged first: a global option found
after a subcommand moves to the front, unless that subcommand has an option of the same
name (`events export -o FILE`, `runbooks list --json`), which keeps it.
"""

from __future__ import annotations

from typing import Any

# Global options and whether each takes a value.
GLOBAL = {
    "--url": True,
    "--token": True,
    "--token-file": True,
    "--json": False,
    "-o": True,
    "--output": True,
}


def hoist_globals(command: Any, args: list[str]) -> list[str]:
    """The argument list with global options that follow a subcommand moved to the front."""
    front: list[str] = []
    rest: list[str] = []
    current = command  # a click command (typer ships its own click): read by duck typing
    below_top = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg in (getattr(current, "commands", None) or {}):
            current = current.commands[arg]
            below_top = True
            rest.append(arg)
            i += 1
            continue
        name = arg.split("=", 1)[0]
        own = {o for p in current.params for o in (*p.opts, *p.secondary_opts)}
        if below_top and name in GLOBAL and name not in own:
            takes_value = GLOBAL[name] and "=" not in arg
            front += args[i : i + (2 if takes_value else 1)]
            i += 2 if takes_value else 1
            continue
        rest.append(arg)
        i += 1
    return front + rest
