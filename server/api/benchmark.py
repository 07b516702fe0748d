"""Routes that exist for the load benchmark only, never in a production collector.

`teleposture-server serve --benchmark-routes` mounts them (benchmarks/collector_load.py does); a plain
`serve` answers 404 there, so the public API carries no endpoint that does nothing.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from server.api.deps import ContextDep, limit_ip
from server.api.models import Ping, Problem

router = APIRouter(prefix="/api/v1", tags=["benchmark"])


@router.post("/ping", response_model=Ping, responses={413: {"model": Problem}, 429: {"model": Problem}})
async def ping(request: Request, ctx: ContextDep) -> dict[str, bool]:
    """Reads and discards the body: what the server sustains for requests that do nothing, the reference
    the ingest rate is compared with. It passes the same body limit and per-address limit as the agent
    endpoints, so the comparison is fair."""
    limit_ip(request, ctx)
    async for _chunk in request.stream():
        pass
    return {"ok": True}
