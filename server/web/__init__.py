"""The security team's dashboard: server-rendered pages (Jinja2, autoescaped), htmx and Chart.js
vendored under static/vendor, English, French and Arabic. `server.app.create_app` includes ``router``."""

from __future__ import annotations

from fastapi import APIRouter

from server.web import action_pages, admin_pages, pages, trends

router = APIRouter(include_in_schema=False)
router.include_router(pages.router)
router.include_router(admin_pages.router)
router.include_router(action_pages.router)
router.include_router(trends.router)

__all__ = ["router"]
