"""Building blocks shared by every section of the config file."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

from daemon.domain.durations import parse_duration

# "30s", "5m", "1h30m" or a number of seconds.
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Section(BaseModel):
    """A config section: unknown keys are errors, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid")
