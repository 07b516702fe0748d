"""Run and inspect the bundled Alembic migrations (server/migrations)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from server.store.db import Database

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    # The bundled migrations do not change while the process runs; loading them compiles every file.
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    head = _scripts().get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None  # None: an empty database
    head: str
    known: bool  # the current revision is one this code ships

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    def explain(self) -> str:
        if self.current is None:
            return "the database has no collector schema yet: run `teleposture-server init` first"
        if not self.known:
            return (f"the database schema is at revision {self.current}, which this collector version does not "
                    f"know (newer software migrated it?); run the matching collector version")
        return (f"the database schema is at revision {self.current}, this collector needs {self.head}: "
                "run `teleposture-server init` to apply the pending migrations (back up the database first)")


def status(db: Database) -> SchemaStatus:
    script = _scripts()
    with db.read() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    known = current is None or any(rev.revision == current for rev in script.walk_revisions())
    return SchemaStatus(current=current, head=head_revision(), known=known)


def upgrade(db: Database) -> None:
    """Apply every pending migration in one transaction (both backends have transactional DDL)."""
    config = _config()
    with db.write_engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
