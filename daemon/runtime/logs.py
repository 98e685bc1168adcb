"""Structured, one-line logs to stdout (logfmt or JSON) through structlog, secrets scrubbed.

The project logs with the standard library in arq's style: named loggers and `%`-args,
`log.info("route names an unknown runbook runbook=%s incident=%s", rid, inc)`. Each
`name=%x` in the format becomes a field of its own (a key in JSON, a logfmt pair); the rest
of the format is the message. Values are rendered as text people and parsers read (a UUID
as its string, a time in ISO 8601), never as Python reprs. Under systemd (`JOURNAL_STREAM`
set) each line starts with its syslog priority (`<3>` error, `<4>` warning, `<6>` info,
`<7>` debug) so `journalctl -p warning` filters by level.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Any
from uuid import UUID

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

_REDACTED = "***"
# `name=%s`, `name=%d`, `name=%r`, `name=%.1f`: a field; the text around them is the message.
_FIELD = re.compile(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_.-]*)=(%[-#0 +]?\d*(?:\.\d+)?[sdrfgiex])")
_PLACEHOLDER = re.compile(r"%[-#0 +]?\d*(?:\.\d+)?[sdrfgiex%]")
# syslog priorities by level name (sd-daemon(3)).
PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}
# Fields every line starts with, in this order.
_HEAD = ("ts", "level", "logger", "msg")


def plain(value: Any) -> Any:
    """A value as text a log reader expects: no reprs, no control characters but newlines."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, UUID | str):
        text = str(value)
    elif isinstance(value, list | tuple | set | frozenset | dict):
        text = json.dumps(value, default=str, separators=(",", ":"))
    else:
        text = str(value)
    return re.sub(r"[\x00-\x09\x0b-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)


def split_fields(fmt: str, args: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
    """The message and the fields of a `%`-format and its args.

    Only formats whose every placeholder can be paired with its argument are split; any
    other format is rendered whole as the message.
    """
    holders = [m for m in _PLACEHOLDER.finditer(fmt) if m.group() != "%%"]
    if len(holders) != len(args):
        return (fmt % args if args else fmt), {}
    fields: dict[str, Any] = {}
    by_start = {m.start(2): m for m in _FIELD.finditer(fmt)}
    text, keep_args, pos = [], [], 0
    for i, h in enumerate(holders):
        field = by_start.get(h.start())
        if field is None:
            keep_args.append(args[i])
            continue
        text.append(fmt[pos : field.start(1)])
        pos = h.end()
        value = args[i]
        spec = h.group()
        # A field is quoted by the renderer, so `%r` needs no quotes of its own.
        fields[field.group(1)] = value if spec in ("%s", "%r", "%d") else spec % value
    text.append(fmt[pos:])
    rest = re.sub(r"\s+", " ", "".join(text)).strip()
    msg = rest % tuple(keep_args) if keep_args or "%%" in rest else rest
    return msg, fields


def _from_record(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Fields from the standard-library record: logger, message and `name=%x` pairs."""
    record: logging.LogRecord = event["_record"]
    fmt = str(event.get("event", ""))
    raw = event.get("positional_args") or ()
    args: tuple[Any, ...] = raw if isinstance(raw, tuple) else ()
    exc_info = event.get("exc_info")
    event.clear()
    at = datetime.fromtimestamp(record.created, UTC)
    event["ts"] = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event["level"] = record.levelname.lower()
    event["logger"] = record.name
    try:
        if raw and not args:  # `%(name)s` with a mapping: rendered whole
            raise TypeError
        msg, fields = split_fields(fmt, args)
    except (TypeError, ValueError, KeyError):
        try:
            msg, fields = fmt % raw if raw else fmt, {}
        except (TypeError, ValueError, KeyError):
            msg, fields = f"{fmt} {raw!r}", {}
    event["msg"] = msg
    for key, value in fields.items():
        event[key if key not in _HEAD else f"{key}_"] = value
    if isinstance(exc_info, tuple) and exc_info[1] is not None:
        event["exc"] = logging.Formatter().formatException(exc_info)
    return event


class _Scrub:
    """Replaces any known secret (and bearer tokens) in every value with ***."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def text(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, _REDACTED)
        return re.sub(r"(Bearer\s+)[A-Za-z0-9._~+/=-]{6,}", r"\1" + _REDACTED, text)

    def __call__(self, _: WrappedLogger, __: str, event: EventDict) -> EventDict:
        for key, raw in event.items():
            value = plain(raw)
            event[key] = self.text(value) if isinstance(value, str) else value
        return event


def _prefix_priority(_: WrappedLogger, name: str, line: Any) -> Any:
    """After the renderer: the line, prefixed with its syslog priority for journald."""
    return f"<{PRIORITY.get(name, 6)}>{line}"


def formatter(
    fmt: str, secrets: Iterable[str] = (), journal: bool | None = None
) -> logging.Formatter:
    """The logging.Formatter for `logging.format` (`keyvalue` or `json`)."""
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.processors.LogfmtRenderer(key_order=list(_HEAD), bool_as_flag=False)
    )
    if journal is None:
        journal = bool(os.environ.get("JOURNAL_STREAM"))
    chain: list[Processor] = [_from_record, _Scrub(secrets), renderer]
    if journal:
        chain.append(_prefix_priority)
    return structlog.stdlib.ProcessorFormatter(
        processors=chain, foreign_pre_chain=[], pass_foreign_args=True, use_get_message=False
    )


def setup_logging(fmt: str, level: str, secrets: Iterable[str] = ()) -> None:
    """Send all logs to stdout in the chosen format, scrubbing secrets."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter(fmt, secrets))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # A library's DeprecationWarning (asyncssh on a newer cryptography) would otherwise go
    # to stderr as a bare line that no log reader can parse: it becomes a WARNING record.
    logging.captureWarnings(True)
    # asyncssh names cryptography's DSA classes at import, and cryptography warns of each
    # on every start (five lines): nothing an operator can act on, so not logged.
    warnings.filterwarnings("ignore", message="DSA is deprecated", module="asyncssh")
    for noisy in ("uvicorn", "uvicorn.error", "uvicorn.access", "aiokafka", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
