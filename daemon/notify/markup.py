"""Untrusted text made inert in each chat platform's markup.

A message's text comes from alert labels and annotations and from the model: whoever
writes an alert rule, or steers the model, writes it. Unescaped, `<!channel>` pings a
whole Slack channel and `<https://evil|Open in watchkeeper>` puts a fake link in the bot's
own message. `escaped(message, platform)` returns the message with every text a person
did not write in this codebase escaped for that platform; renderers then add their own
markup (bold, code, links to the console) around it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from daemon.notify.pipeline import Message

Platform = Literal["slack", "markdown"]

# Markdown (Mattermost, Teams): what makes a link or image (`](`), an autolink or tag (`<`)
# or a mention (`@`), broken by a zero-width space. Teams renders no backslash escapes, and
# emphasis or a bracketed "[CRITICAL]" is harmless, so the rest is left as written.
_ZWSP = "\u200b"
_MARKDOWN = re.compile(r"(\]\s*\(|<|@)")


def slack(text: str) -> str:
    """Slack mrkdwn: &, < and > as entities, so no mention, channel ping or link survives."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def markdown(text: str) -> str:
    """Markdown: no link, autolink, HTML tag or @mention survives; the text reads the same."""
    return _MARKDOWN.sub(lambda m: m[0][0] + _ZWSP + m[0][1:], text)


_ESCAPES: dict[Platform, Callable[[str], str]] = {"slack": slack, "markdown": markdown}


def escaped(message: Message, platform: Platform) -> Message:
    """The message with its untrusted texts escaped for `platform` (URLs and buttons kept)."""
    esc = _ESCAPES[platform]
    return message.model_copy(
        update={
            "headline": esc(message.headline),
            "title": esc(message.title),
            "summary": esc(message.summary),
            "note": esc(message.note),
            "facts": tuple((esc(k), esc(v)) for k, v in message.facts),
            "labels": {esc(k): esc(v) for k, v in message.labels.items()},
            "probable_cause": esc(message.probable_cause),
            "agent_summary": esc(message.agent_summary),
            "proposals": tuple(
                p.model_copy(update={"runs": esc(p.runs), "rationale": esc(p.rationale)})
                for p in message.proposals
            ),
            "held": tuple(h.model_copy(update={"title": esc(h.title)}) for h in message.held),
        }
    )
