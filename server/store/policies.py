"""Policy versions (immutable), the default policy and per-org-unit assignment.

An assignment names a policy id; the device gets the latest version of that id. Pushing version N+1
therefore rolls it out to every org unit assigned to the id, and agents never see a lower version.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from agent.policy import Policy, policy_from_json
from server.cluster import POLICY_CHANNEL, notify
from server.store import assignment
from server.store.assignment import DEFAULT_POLICY_SETTING
from server.store.schema import org_units, policies, server_settings
from server.store.scope import Scope


class PolicyStoreError(ValueError):
    """A push or assignment that would break the version rules; the message says what to do."""


@dataclass(frozen=True)
class StoredPolicy:
    pk: int
    policy: Policy

    @property
    def ref(self) -> str:
        return f"{self.policy.id}@{self.policy.version}"


_parsed: dict[int, Policy] = {}
_parsed_lock = threading.Lock()


def _policy_from_document(pk: int, document: str) -> Policy:
    # Stored versions never change, so a parsed policy is cached for the life of the process.
    with _parsed_lock:
        cached = _parsed.get(pk)
    if cached is not None:
        return cached
    policy = policy_from_json(json.loads(document))
    with _parsed_lock:
        _parsed[pk] = policy
    return policy


def push_policy(conn: Connection, policy: Policy, created_by: Optional[str] = None,
                now: Optional[float] = None) -> tuple[int, bool]:
    """Store a new version; returns (pk, created). Pushing the identical document again is a no-op."""
    existing = conn.execute(sa.select(policies.c.id, policies.c.digest).where(
        policies.c.policy_id == policy.id, policies.c.version == policy.version)).first()
    digest = policy.digest()
    if existing is not None:
        if existing.digest == digest:
            return int(existing.id), False
        raise PolicyStoreError(
            f"policy {policy.id} version {policy.version} already exists with different content; "
            "versions are immutable: raise `version` in the document and push again")
    latest = conn.execute(sa.select(sa.func.max(policies.c.version))
                          .where(policies.c.policy_id == policy.id)).scalar_one_or_none()
    if latest is not None and policy.version < latest:
        raise PolicyStoreError(
            f"policy {policy.id} version {policy.version} is lower than the stored version {latest}; agents "
            f"refuse rollbacks: push version {latest + 1} or higher")
    title = policy.title.get("en") or next(iter(policy.title.values()), policy.id)
    pk = int(conn.execute(policies.insert().values(
        policy_id=policy.id, version=policy.version, digest=digest, title=str(title),
        document=policy.canonical_text(), created_at=time.time() if now is None else now,
        created_by=created_by).returning(policies.c.id)).scalar_one())
    _count_assignment_change(conn)
    notify(conn, POLICY_CHANNEL)  # a newer version of an assigned id applies at once, on every node
    return pk, True


def _count_assignment_change(conn: Connection) -> None:
    assignment.bump(conn)


def list_policies(conn: Connection) -> list[dict[str, Any]]:
    """Every stored version (newest first), without documents, with where each id is in use."""
    default_id = default_policy_id(conn)
    assigned: dict[str, list[str]] = {}
    for unit in conn.execute(sa.select(org_units.c.name, org_units.c.policy_id)
                             .where(org_units.c.policy_id.is_not(None))):
        assigned.setdefault(str(unit.policy_id), []).append(str(unit.name))
    latest = dict(conn.execute(sa.select(policies.c.policy_id, sa.func.max(policies.c.version))
                               .group_by(policies.c.policy_id)).all())
    rows = conn.execute(sa.select(policies.c.id, policies.c.policy_id, policies.c.version, policies.c.digest,
                                  policies.c.title, policies.c.created_at, policies.c.created_by)
                        .order_by(policies.c.policy_id, policies.c.version.desc())).mappings().all()
    out = []
    for row in rows:
        item = dict(row)
        item["latest"] = latest.get(row["policy_id"]) == row["version"]
        item["default"] = row["policy_id"] == default_id
        item["assigned_to"] = sorted(assigned.get(row["policy_id"], []))
        out.append(item)
    return out


def cached_policy(pk: int) -> Optional[StoredPolicy]:
    """The policy version ``pk`` if this process parsed it already (versions never change), else None."""
    with _parsed_lock:
        cached = _parsed.get(pk)
    return None if cached is None else StoredPolicy(pk, cached)


def get_policy(conn: Connection, pk: int) -> Optional[StoredPolicy]:
    cached = cached_policy(pk)
    if cached is not None:
        return cached
    row = conn.execute(sa.select(policies.c.document).where(policies.c.id == pk)).first()
    if row is None:
        return None
    return StoredPolicy(pk, _policy_from_document(pk, row.document))


def find_version(conn: Connection, policy_id: str, version: int) -> Optional[StoredPolicy]:
    row = conn.execute(sa.select(policies.c.id, policies.c.document).where(
        policies.c.policy_id == policy_id, policies.c.version == version)).first()
    if row is None:
        return None
    return StoredPolicy(int(row.id), _policy_from_document(int(row.id), row.document))


def latest_pk(conn: Connection, policy_id: str) -> Optional[int]:
    found = conn.execute(sa.select(policies.c.id).where(policies.c.policy_id == policy_id)
                         .order_by(policies.c.version.desc()).limit(1)).scalar_one_or_none()
    return None if found is None else int(found)


def default_policy_id(conn: Connection) -> Optional[str]:
    return conn.execute(sa.select(server_settings.c.value)
                        .where(server_settings.c.name == DEFAULT_POLICY_SETTING)).scalar_one_or_none()


def set_default_policy(conn: Connection, policy_id: str) -> None:
    if latest_pk(conn, policy_id) is None:
        raise PolicyStoreError(f"no policy with id {policy_id!r} has been pushed; push it first")
    updated = conn.execute(server_settings.update().where(server_settings.c.name == DEFAULT_POLICY_SETTING)
                           .values(value=policy_id)).rowcount
    if not updated:
        conn.execute(server_settings.insert().values(name=DEFAULT_POLICY_SETTING, value=policy_id))
    _count_assignment_change(conn)
    notify(conn, POLICY_CHANNEL)


def assign_policy(conn: Connection, org_unit_id: int, policy_id: Optional[str]) -> None:
    """Assign ``policy_id`` (latest version) to an org unit; None returns it to the default policy."""
    if policy_id is not None and latest_pk(conn, policy_id) is None:
        raise PolicyStoreError(f"no policy with id {policy_id!r} has been pushed; push it first")
    conn.execute(org_units.update().where(org_units.c.id == org_unit_id).values(policy_id=policy_id))
    _count_assignment_change(conn)
    notify(conn, POLICY_CHANNEL)


def policy_pk_for_org_unit(conn: Connection, org_unit_id: int) -> Optional[int]:
    """The pk of the policy version that applies to devices of this org unit now."""
    assigned = conn.execute(sa.select(org_units.c.policy_id).where(org_units.c.id == org_unit_id)
                            ).scalar_one_or_none()
    policy_id = assigned or default_policy_id(conn)
    if policy_id is None:
        return None
    return latest_pk(conn, policy_id)


def policy_for_org_unit(conn: Connection, org_unit_id: int) -> Optional[StoredPolicy]:
    pk = policy_pk_for_org_unit(conn, org_unit_id)
    return None if pk is None else get_policy(conn, pk)


def policy_ids_in_scope(conn: Connection, scope: Scope) -> set[str]:
    """Policy ids a scoped principal may see: those applying to its org units (and the default)."""
    ids = {str(v) for v in conn.execute(sa.select(org_units.c.policy_id).where(
        scope.clause(org_units.c.id), org_units.c.policy_id.is_not(None))).scalars()}
    default_id = default_policy_id(conn)
    if default_id:
        ids.add(default_id)
    return ids
