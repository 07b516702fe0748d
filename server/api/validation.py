"""422 answers for requests that fail validation, without echoing what was sent.

FastAPI's default handler repeats each offending input. A value that cannot be encoded (a lone
surrogate such as ``\\udc80``, sent as a JSON escape) then made the error answer itself fail with a 500,
and echoing huge or hostile input is never useful: the location and the message say what to fix.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def _problem(error: Any) -> dict[str, Any]:
    location = [part if isinstance(part, int) else str(part).encode("utf-8", "replace").decode()[:100]
                for part in error.get("loc", ())]
    return {"type": str(error.get("type", "")), "loc": location, "msg": str(error.get("msg", ""))}


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse(status_code=422, content={"detail": [_problem(error) for error in errors]})
