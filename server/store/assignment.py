"""The policy assignment counter: a server-wide number that goes up in the same transaction as every
change of which policy version applies to devices (a new version pushed, an org unit's assignment, the
default policy).

Each bundle the collector hands a device carries, signed by the server key, the device id, the digest
of the policy in it and the counter at the moment that policy was chosen
(`agent.protocol.sign_assignment`). The agent refuses a bundle whose counter is lower than the one it
runs, or equal with another policy: a replayed older bundle — of the same policy id or of another one —
cannot take a device back. The counter and the policy are read in ONE statement, so a pair always
belongs to the same committed state (equal counter, same policy).
"""

from __future__ import annotations

from typing import Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.store.schema import org_units, policies, server_settings

COUNTER_SETTING = "policy_assignment_counter"
DEFAULT_POLICY_SETTING = "default_policy_id"  # the policy of devices whose org unit names none


def bump(conn: Connection) -> None:
    """Count one change of effective policy (call in the transaction that makes it)."""
    updated = conn.execute(server_settings.update().where(server_settings.c.name == COUNTER_SETTING).values(
        value=sa.cast(sa.cast(server_settings.c.value, sa.BigInteger) + 1, sa.String))).rowcount
    if not updated:
        conn.execute(server_settings.insert().values(name=COUNTER_SETTING, value="1"))


def current(conn: Connection, org_unit_id: int) -> tuple[Optional[int], int]:
    """(pk of the policy version that applies to the org unit, the counter), from one snapshot."""
    counter = sa.select(server_settings.c.value).where(server_settings.c.name == COUNTER_SETTING).scalar_subquery()
    assigned = sa.select(org_units.c.policy_id).where(org_units.c.id == org_unit_id).scalar_subquery()
    default = sa.select(server_settings.c.value).where(
        server_settings.c.name == DEFAULT_POLICY_SETTING).scalar_subquery()
    latest = (sa.select(policies.c.id).where(policies.c.policy_id == sa.func.coalesce(assigned, default))
              .order_by(policies.c.version.desc()).limit(1).scalar_subquery())
    row = conn.execute(sa.select(latest, counter)).one()
    return (None if row[0] is None else int(row[0])), (int(row[1]) if row[1] is not None else 0)
