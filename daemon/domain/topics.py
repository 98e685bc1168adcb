"""Topic templates: MQTT topic levels mapped to labels, e.g. `sites/{site}/{device}/{metric}`.

A level is either literal text, which the topic must repeat, or `{name}`, which becomes the
label `name`. `{metric}` is special: it names the metric of the samples in the message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PLACEHOLDER = re.compile(r"^\{([a-zA-Z_][a-zA-Z0-9_]*)\}$")
METRIC = "metric"


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    """A parsed template: per level, the label it fills or the literal it must equal."""

    text: str
    levels: tuple[tuple[bool, str], ...]  # (is_placeholder, name or literal)

    @classmethod
    def parse(cls, text: str) -> TopicTemplate:
        """Parse a template; raise ValueError naming the bad level."""
        levels = []
        names = set()
        for i, level in enumerate(text.split("/")):
            m = _PLACEHOLDER.match(level)
            if m:
                if m.group(1) in names:
                    raise ValueError(f"template level {i + 1}: {{{m.group(1)}}} appears twice")
                names.add(m.group(1))
                levels.append((True, m.group(1)))
            elif any(c in level for c in "{}+#"):
                raise ValueError(
                    f"template level {i + 1} {level!r}: use a whole level {{name}} or literal text"
                )
            else:
                levels.append((False, level))
        return cls(text, tuple(levels))

    def conflicts_with(self, topic_filter: str) -> str:
        """Why no topic matched by `topic_filter` can fit this template ("" if some can)."""
        parts = topic_filter.split("/")
        if parts[-1] == "#":
            if len(parts) - 1 > len(self.levels):
                return f"filter {topic_filter!r} has more levels than template {self.text!r}"
            parts = parts[:-1]
        elif len(parts) != len(self.levels):
            return (
                f"filter {topic_filter!r} has {len(parts)} levels, "
                f"template {self.text!r} has {len(self.levels)}"
            )
        for part, (placeholder, value) in zip(parts, self.levels, strict=False):
            if not placeholder and part not in ("+", value):
                return f"filter level {part!r} can never equal template level {value!r}"
        return ""

    def match(self, topic: str) -> dict[str, str] | None:
        """Labels from a topic, or None when the topic does not fit (including `metric`)."""
        parts = topic.split("/")
        if len(parts) != len(self.levels):
            return None
        out = {}
        for part, (placeholder, value) in zip(parts, self.levels, strict=True):
            if placeholder:
                if not part:
                    return None
                out[value] = part
            elif part != value:
                return None
        return out
