"""`shell_diagnostic`: run an allowlisted argv template, never through a shell.

Parameter values are checked against a conservative pattern (no spaces, quotes, shell
metacharacters or leading dashes), so a value can neither add options nor commands. Output
is capped and the process is killed at its timeout. With a host router the command runs on
the incident's target host through its transport (ssh, or local for this host), never on
another host instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from daemon.actions.hosts import HostRouter, TargetError
from daemon.runbooks.tools import (
    ShellDiagnosticArgs,
    ToolContext,
    ToolResult,
    error,
)
from handlers.actions.process import discard

_VALUE = re.compile(r"^[A-Za-z0-9@%+=:,./_][A-Za-z0-9@%+=:,./_-]{0,255}$")
_SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
    "LC_ALL": "C.UTF-8",
    "SYSTEMD_PAGER": "",
}


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> bytes:
    """Read until EOF or just past `cap` bytes."""
    buf = bytearray()
    while len(buf) <= cap:
        chunk = await stream.read(65536)
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


class ShellTemplateSpec:
    """An argv with `{param}` slots, and its timeout."""

    def __init__(self, argv: list[str], timeout: float) -> None:
        self.argv = argv
        self.timeout = timeout

    def params(self) -> set[str]:
        """The slots this template has."""
        return {m.group(1) for a in self.argv for m in _SLOT.finditer(a)}

    def render(self, values: dict[str, str]) -> list[str]:
        """The argv with every slot filled; raise ValueError naming a bad or missing value."""
        missing = self.params() - set(values)
        if missing:
            raise ValueError(f"missing parameters: {', '.join(sorted(missing))}")
        extra = set(values) - self.params()
        if extra:
            raise ValueError(f"unknown parameters: {', '.join(sorted(extra))}")
        for k, v in values.items():
            if not _VALUE.match(v) or ".." in v:
                raise ValueError(
                    f"parameter {k}={v!r} is not allowed (letters, digits and @%+=:,./_- only, "
                    "no leading dash, no ..)"
                )
        return [_SLOT.sub(lambda m: values[m.group(1)], a) for a in self.argv]


class ShellDiagnostic:
    """Runs only the templates named in agent.tools.shell."""

    name = "shell_diagnostic"
    args = ShellDiagnosticArgs

    def __init__(
        self,
        templates: dict[str, ShellTemplateSpec],
        output_bytes: int,
        hosts: HostRouter | None = None,
    ) -> None:
        self.templates = templates
        self.output_bytes = output_bytes
        self.hosts = hosts

    async def run(self, args: ShellDiagnosticArgs, ctx: ToolContext) -> ToolResult:
        """Render, run with a timeout, capture capped output."""
        tpl = self.templates.get(args.command)
        if tpl is None:
            known = ", ".join(sorted(self.templates)) or "none configured"
            return error(
                ctx.now,
                f"command {args.command!r} is not in agent.tools.shell (allowed: {known})",
                status="refused",
            )
        try:
            argv = tpl.render(args.args)
        except ValueError as e:
            return error(ctx.now, f"{args.command}: {e}", status="refused")
        if self.hosts is not None:
            return await self._run_on_target(argv, tpl.timeout, ctx)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=_ENV,
                start_new_session=True,
            )
        except OSError as e:
            return error(ctx.now, f"{argv[0]}: cannot run: {e.strerror}")
        assert proc.stdout is not None
        try:
            out = await asyncio.wait_for(_read_capped(proc.stdout, self.output_bytes), tpl.timeout)
            if len(out) > self.output_bytes:
                # Enough output: stop the command rather than let it block on a full pipe.
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                # wait() also waits for stdout's EOF: read what the command left behind.
                await asyncio.wait_for(discard(proc.stdout), tpl.timeout)
            code = await asyncio.wait_for(proc.wait(), tpl.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return error(ctx.now, f"{' '.join(argv)}: timed out after {tpl.timeout:.0f}s")
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        truncated = len(out) > self.output_bytes
        text = out[: self.output_bytes].decode("utf-8", "replace")
        lines = text.splitlines()
        head = lines[0][:200] if lines else "(no output)"
        return ToolResult(
            status="ok",
            observed_at=ctx.now,
            summary=f"{' '.join(argv)} exited {code}: {head}",
            facts={"exit_code": code, "lines": len(lines), "truncated": truncated},
            data={"argv": argv, "exit_code": code, "output": text, "truncated": truncated},
        )

    async def _run_on_target(
        self,
        argv: list[str],
        timeout: float,  # noqa: ASYNC109 - the transport enforces it
        ctx: ToolContext,
    ) -> ToolResult:
        assert self.hosts is not None
        try:
            host, out = await self.hosts.run_on(
                ctx.target, argv, {"SYSTEMD_PAGER": ""}, timeout, self.output_bytes
            )
        except TargetError as e:
            return error(ctx.now, f"{' '.join(argv)}: not run: {e}", status="refused")
        if out.exit_code is None:
            return error(ctx.now, f"{' '.join(argv)}: {out.detail}")
        truncated = out.output.endswith("[output truncated]")
        text = out.output
        lines = text.splitlines()
        head = lines[0][:200] if lines else "(no output)"
        return ToolResult(
            status="ok",
            observed_at=ctx.now,
            summary=f"{' '.join(argv)} on {host} exited {out.exit_code}: {head}",
            facts={"exit_code": out.exit_code, "lines": len(lines), "truncated": truncated},
            data={
                "argv": argv,
                "host": host,
                "exit_code": out.exit_code,
                "output": text,
                "truncated": truncated,
            },
        )
