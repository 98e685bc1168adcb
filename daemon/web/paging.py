"""One page of a list, newest first, as `GET /api/v1/incidents` pages: `limit` (default
`limits.page_size`) and `cursor`, the `next` of the previous page (the last item's
`time|id`). Silences, actions, situations and inhibited alerts page this way (issue 17)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from daemon.domain import Rejected

T = TypeVar("T")


def page_of(
    items: list[T], key: Callable[[T], tuple[datetime, str]], cursor: str, size: int
) -> tuple[list[T], str | None]:
    """The page of `items` after `cursor`, newest first by `key` (a time and an id), and the
    cursor of the page after it (None on the last page)."""
    keyed = [((k[0].isoformat(), k[1]), i) for i in items for k in (key(i),)]
    keyed.sort(key=lambda pair: pair[0], reverse=True)
    if cursor:
        at, sep, ident = cursor.partition("|")
        try:
            datetime.fromisoformat(at)
        except ValueError:
            sep = ""
        if not sep or not ident:
            raise Rejected("cursor: pass back the `next` of the previous page", 400)
        keyed = [(k, i) for k, i in keyed if k < (at, ident)]
    page = keyed[:size]
    more = len(keyed) > size
    nxt = f"{page[-1][0][0]}|{page[-1][0][1]}" if more and page else None
    return [i for _, i in page], nxt
