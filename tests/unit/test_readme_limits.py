"""README's "Limits" table says what the code does: a row for every `limits:` setting and
the other bounds of issue 17, each with the default the code has."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from daemon.config.limits import LimitsConfig
from daemon.config.settings import MIN_TOKEN_CHARS, HttpConfig, StoreTuning
from daemon.domain.durations import MAX_DURATION
from daemon.domain.matchers import MAX_PATTERN
from daemon.web.bodies import FORM_BYTES
from daemon.web.login_limit import LoginThrottle
from daemon.web.sessions import MAX_SESSIONS
from daemon.web.slack import REPLAY_WINDOW_SECONDS, SEEN_MAX

REPO = Path(__file__).resolve().parents[2]
UNITS = {"KiB": 1024, "MiB": 1024 * 1024}
SPANS = {"s": "seconds", "minute": "minutes", "minutes": "minutes", "days": "days"}


def table() -> dict[str, str]:
    """The Limits table: the row's name column -> its default column."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Limits", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and not set(cells[1]) <= {"-", " "} and cells[0] != "limit":
            rows[cells[0]] = cells[1]
    return rows


def row(name: str) -> str:
    """The default of the row whose name column starts with `name` (in backquotes or not)."""
    found = [v for k, v in table().items() if k.startswith((f"`{name}`", name))]
    assert len(found) == 1, f"README's Limits table has {len(found)} rows for {name}"
    return found[0]


def number(text: str) -> int:
    m = re.match(r"(?:at least )?([\d,]+)\s*(KiB|MiB)?", text)
    assert m, text
    return int(m[1].replace(",", "")) * UNITS.get(m[2] or "", 1)


def span(text: str) -> timedelta:
    m = re.match(r"([\d,]+)\s*(s|minutes?|days)\b", text)
    assert m, text
    return timedelta(**{SPANS[m[2]]: int(m[1].replace(",", ""))})


@pytest.mark.parametrize("name", sorted(LimitsConfig.model_fields))
def test_every_limits_setting_has_a_row_with_its_default(name: str) -> None:
    default = LimitsConfig.model_fields[name].default
    said = row(f"limits.{name}")
    if isinstance(default, timedelta):
        assert span(said) == default, (name, said)
    else:
        assert number(said) == default, (name, said)


def test_the_other_bounds_have_rows_with_the_codes_values() -> None:
    http = HttpConfig()
    assert number(row("`http.max_body_bytes`")) == http.max_body_bytes
    assert span(row("`http.read_timeout`")) == http.read_timeout
    assert span(row("`http.keep_alive`")) == http.keep_alive
    assert number(row("`http.max_connections`")) == http.max_connections
    assert number(row("`tuning.dead_letters_kept`")) == StoreTuning().dead_letters_kept
    assert number(row("console form size")) == FORM_BYTES
    assert number(row("regex length")) == MAX_PATTERN
    assert number(row("console sessions")) == MAX_SESSIONS
    assert number(row("bearer token length")) == MIN_TOKEN_CHARS
    throttle = LoginThrottle()
    assert row("failed console logins") == f"{throttle.limit} a minute"
    assert throttle.window == 60.0
    assert row("Slack signatures") == f"{REPLAY_WINDOW_SECONDS // 60} minutes, {SEEN_MAX:,}"
    years = MAX_DURATION.days // 365
    assert row("durations") == f"{years} years"
    assert row("`startsAt` ahead of now") == f"{years} years"
    unit = (REPO / "systemd" / "watchkeeper.service").read_text()
    nofile = re.search(r"^LimitNOFILE=(\d+)", unit, re.M)
    assert nofile is not None
    assert number(row("`LimitNOFILE=`")) == int(nofile[1])
