"""Jinja2 environment (autoescaping on for every template) and the response helpers of the dashboard."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

WEB_DIR = Path(__file__).resolve().parent
TEMPLATE_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"

# No inline script or style anywhere: data for scripts travels in <script type="application/json">.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
                           "object-src 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def when(ts: Optional[float], with_time: bool = True) -> str:
    if ts is None:
        return "—"
    fmt = "%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d"
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime(fmt)


def iso(ts: Optional[float]) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ago_parts(ts: Optional[float], now: Optional[float] = None) -> tuple[str, int]:
    """('minutes'|'hours'|'days', amount) for a relative time; the templates translate the unit."""
    if ts is None:
        return "never", 0
    seconds = max(0.0, (time.time() if now is None else now) - float(ts))
    if seconds < 3600:
        return "minutes", int(seconds // 60)
    if seconds < 2 * 86400:
        return "hours", int(seconds // 3600)
    return "days", int(seconds // 86400)


def _static_versions() -> dict[str, str]:
    versions = {}
    for path in STATIC_DIR.rglob("*"):
        if path.is_file():
            versions[path.relative_to(STATIC_DIR).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return versions


STATIC_VERSIONS = _static_versions()


def static_url(name: str) -> str:
    return f"/static/{name}?v={STATIC_VERSIONS.get(name, '0')}"


env = Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)),
                  autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True, default=True),
                  undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
env.filters["when"] = when
env.filters["iso"] = iso
env.globals["static_url"] = static_url
env.globals["ago_parts"] = ago_parts


def page(template: str, context: dict[str, Any], status_code: int = 200,
         headers: Optional[dict[str, str]] = None) -> HTMLResponse:
    body = env.get_template(template).render(**context)
    return HTMLResponse(body, status_code=status_code, headers={**SECURITY_HEADERS, **(headers or {})})
