"""The audit log: every admin action, who did it, on what, and whether it was allowed."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.store.fleet import Page
from server.store.schema import audit_log
from server.store.scope import Scope


def record(conn: Connection, *, actor: str, action: str, target: Optional[str] = None,
           org_unit_id: Optional[int] = None, outcome: str = "ok",
           details: Optional[Mapping[str, Any]] = None, remote_addr: Optional[str] = None,
           now: Optional[float] = None) -> None:
    conn.execute(audit_log.insert().values(
        at=time.time() if now is None else now, actor=actor[:200], action=action[:100],
        target=None if target is None else target[:300], org_unit_id=org_unit_id, outcome=outcome,
        details=json.dumps(dict(details or {}), sort_keys=True, default=str), remote_addr=remote_addr))


def list_entries(conn: Connection, scope: Scope, *, page: int = 1, per_page: int = 50,
                 action: Optional[str] = None, actor: Optional[str] = None,
                 since: Optional[float] = None) -> Page:
    """Newest first. A scoped reader sees only entries about its org units (not server-wide ones)."""
    where: list[Any] = []
    if not scope.unrestricted:
        where.append(scope.clause(audit_log.c.org_unit_id))
    if action:
        where.append(audit_log.c.action == action)
    if actor:
        where.append(audit_log.c.actor == actor)
    if since is not None:
        where.append(audit_log.c.at >= since)
    total = conn.execute(sa.select(sa.func.count()).select_from(audit_log).where(*where)).scalar_one()
    rows = conn.execute(
        sa.select(audit_log).where(*where).order_by(audit_log.c.at.desc(), audit_log.c.id.desc())
        .limit(per_page).offset((page - 1) * per_page)).mappings().all()
    items = []
    for row in rows:
        item = dict(row)
        try:
            item["details"] = json.loads(row["details"])
        except ValueError:
            item["details"] = {}
        items.append(item)
    return Page(items=items, total=total, page=page, per_page=per_page)
