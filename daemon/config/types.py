"""Building blocks shared by every section of the config file."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from daemon.domain.durations import parse_duration
from daemon.domain.matchers import Matcher

# "30s", "5m", "1h30m" or a number of seconds.
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _parse_all(matchers: list[str]) -> list[str]:
    for m in matchers:
        Matcher.parse(m)
    return matchers


# Label matchers as Alertmanager writes them (`severity="critical"`, `job=~"api.*"`), each checked.
Matchers = Annotated[list[str], AfterValidator(_parse_all)]


class Section(BaseModel):
    """A config section: unknown keys are errors, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid")
