"""What every dashboard route shares: the HTML-error route class, the signed-in user, CSRF checks,
the page context and small parsers for query-string values."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Optional

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from server.api.deps import ContextDep, client_address, deny
from server.context import AppContext
from server.store import sessions
from server.web import auth, render
from server.web.auth import Redirect, WebUser
from server.web.i18n import LANGUAGE_NAMES, LANGUAGES, Translator, choose_language
from server.web.queries import load_session_user


def language(request: Request) -> str:
    return choose_language(request.cookies.get(auth.LANG_COOKIE), request.headers.get("accept-language"))


def error_page(request: Request, status: int, detail: Any) -> Response:
    t = Translator(language(request))
    message = detail if isinstance(detail, str) else t("error.generic")
    titles = {400: "error.bad_request", 403: "error.forbidden", 404: "error.not_found", 429: "error.too_many"}
    return render.page("error.html", {"t": t, "lang": t.lang, "rtl": t.rtl, "user": None, "csrf": "",
                                      "title": t(titles.get(status, "error.generic")), "message": message,
                                      "status": status, "languages": [], "path": request.url.path,
                                      "nav": ""}, status_code=status)


class WebRoute(APIRoute):
    """Routes that answer browsers: errors become HTML pages and redirects stay redirects."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await original(request)
            except HTTPException as exc:
                if exc.status_code == 303 and exc.headers and "Location" in exc.headers:
                    location = exc.headers["Location"]
                    if request.headers.get("hx-request"):
                        return Response(status_code=204, headers={"HX-Redirect": location})
                    return RedirectResponse(location, status_code=303)
                response = error_page(request, exc.status_code, exc.detail)
                for name, value in (exc.headers or {}).items():
                    response.headers[name] = value
                return response
            except RequestValidationError as exc:
                problems = "; ".join(f"{'.'.join(str(p) for p in err.get('loc', ())[1:])}: {err.get('msg')}"
                                     for err in exc.errors())
                return error_page(request, 400, problems)
            for name, value in render.SECURITY_HEADERS.items():
                if name not in response.headers:
                    response.headers[name] = value
            return response

        return handler


def local_path(target: Optional[str], default: str = "/") -> str:
    """Only same-site paths are followed after sign-in or a language change (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def _current_user(request: Request, ctx: AppContext) -> Optional[WebUser]:
    session = auth.decode_session(ctx, request.cookies.get(auth.SESSION_COOKIE, ""))
    if session is None:
        return None  # forged, malformed or expired: refused without a database read
    with ctx.db.read() as conn:
        found = load_session_user(conn, session.session_id, session.user_id)
    if found is None:
        return None
    live, principal = found
    if live.needs_touch:
        with ctx.db.write() as conn:
            sessions.touch_session(conn, live.id)
    return WebUser(username=live.username, principal=principal, session=session, session_row=live.id)


def optional_user(request: Request, ctx: ContextDep) -> Optional[WebUser]:
    return _current_user(request, ctx)


def require_user(request: Request, ctx: ContextDep) -> WebUser:
    user = _current_user(request, ctx)
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise Redirect("/login?" + urllib.parse.urlencode({"next": target}))
    return user


UserDep = Annotated[WebUser, Depends(require_user)]
OptionalUserDep = Annotated[Optional[WebUser], Depends(optional_user)]


async def _presented_csrf(request: Request) -> Any:
    header = request.headers.get(auth.CSRF_HEADER)
    if header is not None:
        return header
    if request.headers.get("content-type", "").split(";")[0].strip() in (
            "application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()
        return form.get(auth.CSRF_FIELD)
    return None


async def require_csrf(request: Request, ctx: ContextDep, user: UserDep) -> WebUser:
    """A signed-in user whose form carries the CSRF token of their session; 403 otherwise."""
    if not auth.csrf_valid(ctx, user.session.session_id, await _presented_csrf(request)):
        raise HTTPException(status_code=403, detail=Translator(language(request))("error.csrf"))
    return user


CsrfUserDep = Annotated[WebUser, Depends(require_csrf)]


def refuse_unless_admin(request: Request, ctx: AppContext, user: WebUser, action: str) -> None:
    """403 (recorded in the audit log as denied) unless the user has the admin role."""
    if not user.is_admin:
        raise deny(ctx, request, user.principal, action, Translator(language(request))("error.admin_only"))


async def require_admin_csrf(request: Request, ctx: ContextDep, user: CsrfUserDep) -> WebUser:
    await run_in_threadpool(refuse_unless_admin, request, ctx, user, f"web {request.method} {request.url.path}")
    return user


AdminCsrfDep = Annotated[WebUser, Depends(require_admin_csrf)]


def require_admin_view(request: Request, ctx: ContextDep, user: UserDep) -> WebUser:
    refuse_unless_admin(request, ctx, user, f"web {request.method} {request.url.path}")
    return user


AdminViewDep = Annotated[WebUser, Depends(require_admin_view)]


def context(request: Request, ctx: AppContext, user: Optional[WebUser], nav: str, **extra: Any) -> dict[str, Any]:
    t = Translator(language(request))
    return {"t": t, "lang": t.lang, "rtl": t.rtl, "user": user, "nav": nav, "now": time.time(),
            "csrf": auth.csrf_token(ctx, user.session.session_id) if user else "",
            "languages": [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
            "path": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            "stale_after_days": f"{ctx.settings.stale_after / 86400:g}", **extra}


def audit_address(request: Request) -> str:
    return client_address(request)


def bad_request(message: str) -> HTTPException:
    return HTTPException(status_code=400, detail=message)


def parse_int(value: Optional[str], name: str, *, minimum: int = 1, maximum: int = 2**31 - 1) -> Optional[int]:
    if value is None or value == "":
        return None
    if not value.isdigit() or not minimum <= int(value) <= maximum:
        raise bad_request(f"{name} must be a whole number between {minimum} and {maximum}, found {value[:40]!r}")
    return int(value)
