"""Linking and unlinking incidents by hand from the console: the forms on an incident's page.

The same commands as `POST /api/v1/situations[/{id}/link|/unlink]`, from a responder's
session with its CSRF token; each link records the person and the reason they gave.
"""

from __future__ import annotations

import re
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import Response

from daemon.domain import Rejected
from daemon.domain.situation_model import (
    LinkIncidents,
    SituationLinked,
    SituationOpened,
    UnlinkIncident,
)
from daemon.web.console import Con, Refused, back, posted

router = APIRouter(include_in_schema=False)
_SEPARATORS = re.compile(r"[\s,;]+")
MAX_IDS = 100


def incident_ids(text: str) -> tuple[UUID, ...]:
    """Incident ids typed into a form (separated by spaces, commas or new lines); a console
    incident URL pasted whole is accepted too."""
    ids = []
    for word in filter(None, _SEPARATORS.split(text.strip())):
        tail = word.rstrip("/").rsplit("/", 1)[-1]
        try:
            ids.append(UUID(tail))
        except ValueError:
            raise Rejected(f"{word[:80]!r} is not an incident id", 422) from None
    if not ids:
        raise Rejected("name at least one incident to link (its id or console URL)", 422)
    if len(ids) > MAX_IDS:
        raise Rejected(f"at most {MAX_IDS} incidents in one form", 422)
    return tuple(dict.fromkeys(ids))


async def _change(request: Request, con: Con, situation_id: UUID | None, unlink: bool) -> Response:
    try:
        session, data = await posted(request, con)
    except Refused as r:
        return r.response
    me = session.identity
    reason = data.get("reason", "").strip()
    try:
        if not me.can("responder"):
            raise Rejected(f"{me.name} has role {me.role}; this needs responder or higher", 403)
        if unlink:
            assert situation_id is not None
            try:
                member = UUID(data.get("incident_id", ""))
            except ValueError:
                raise Rejected("say which incident to unlink (incident_id)", 422) from None
            cmd: LinkIncidents | UnlinkIncident = UnlinkIncident(
                situation_id, member, me.name, reason
            )
        else:
            # From an incident's page with no situation yet, that incident is named too.
            ids = incident_ids(f"{data.get('incident_id', '')} {data.get('incident_ids', '')}")
            cmd = LinkIncidents(ids, me.name, situation_id, reason=reason)
        events = await con.ctx.ingestor.execute(cmd)
        joined = sum(isinstance(e, SituationOpened | SituationLinked) for e in events)
        done = "unlinked from the situation" if unlink else f"linked {joined} incident(s) by hand"
        session.flash("ok", done)
    except Rejected as e:
        session.flash("error", e.reason)
    return back(data, "/")


@router.post("/situations")
async def create(request: Request, con: Con) -> Response:
    """A new situation from the incidents named in the form (two or more)."""
    return await _change(request, con, None, unlink=False)


@router.post("/situations/{situation_id}/link")
async def link(request: Request, con: Con, situation_id: UUID) -> Response:
    """Add the incidents named in the form to an open situation."""
    return await _change(request, con, situation_id, unlink=False)


@router.post("/situations/{situation_id}/unlink")
async def unlink(request: Request, con: Con, situation_id: UUID) -> Response:
    """Take one incident out of a situation (correlation leaves it alone afterwards)."""
    return await _change(request, con, situation_id, unlink=True)
