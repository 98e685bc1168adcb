"""Structured, one-line logs to stdout (key=value or JSON), with secrets scrubbed."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable

_REDACTED = "***"


class _Scrubber(logging.Filter):
    """Replaces any known secret (and bearer tokens) in a record with ***."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, _REDACTED)
        return re.sub(r"(Bearer\s+)[A-Za-z0-9._~+/=-]{6,}", r"\1" + _REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        record.msg, record.args = self.scrub(msg), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class KeyValueFormatter(logging.Formatter):
    """`ts=... level=info logger=watchkeeper.api msg="..."`: one event per line for journald."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = (
            f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
            f'logger={record.name} msg="{record.getMessage()}"'
        )
        if record.exc_text:
            line += " exc=" + json.dumps(record.exc_text)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out)


def setup_logging(fmt: str, level: str, secrets: Iterable[str] = ()) -> None:
    """Send all logs to stdout in the chosen format, scrubbing secrets."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    handler.addFilter(_Scrubber(secrets))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("uvicorn", "uvicorn.error", "uvicorn.access", "aiokafka", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
