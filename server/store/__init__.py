"""Collector storage: schema, engines and migrations, and plain query functions (reused by the dashboard).

Modules: schema (tables), db (engines), migrate (Alembic), scope (org-unit scope), fleet (summary, lists,
detail), accounts (org units, users, API tokens), enrolment (tokens, devices), policies (versions,
assignment), audit (audit log), maintenance (daily stats, retention).
"""
