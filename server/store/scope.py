"""Who may see what: an org-unit scope applied to every admin query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement


@dataclass(frozen=True)
class Scope:
    """``org_unit_ids`` None means the whole fleet; otherwise only these org units (possibly none)."""

    org_unit_ids: Optional[frozenset[int]] = None

    @classmethod
    def everything(cls) -> Scope:
        return cls(None)

    @property
    def unrestricted(self) -> bool:
        return self.org_unit_ids is None

    def allows(self, org_unit_id: Optional[int]) -> bool:
        if self.org_unit_ids is None:
            return True
        return org_unit_id is not None and org_unit_id in self.org_unit_ids

    def clause(self, column: Any) -> ColumnElement[bool]:
        if self.org_unit_ids is None:
            return sa.true()
        return column.in_(sorted(self.org_unit_ids))
