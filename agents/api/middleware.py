"""The middlewares every request passes through, outermost first: errors, then API version.

- :func:`error_middleware` makes every failure a Docker JSON error: :class:`ApiError` keeps its
  status and message; unknown routes and wrong methods are 404 "page not found" (dockerd's mux sends
  both to its not-found handler); anything unexpected is logged with its traceback and answered 500
  without one.
- :func:`version_middleware` validates the ``/vNN`` prefix captured by the router and records the
  negotiated version for the handler.
- :func:`add_standard_headers` stamps dockerd's headers on every response.
"""

from __future__ import annotations

import logging

from aiohttp import web

from agents.api import versions
from agents.api.errors import ApiError
from agents.api.httputil import API_VERSION_KEY, error_response
from agents.api.routing import Handler
from agents.version import API_VERSION, SERVER_HEADER

log = logging.getLogger("labagent.api")

STANDARD_HEADERS = {
    "Server": SERVER_HEADER,
    "Api-Version": API_VERSION,
    "Docker-Experimental": "false",
    "Ostype": "linux",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        if exc.status >= 500:
            log.error("%s %s: %s", request.method, request.path, exc.message)
        return error_response(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status in (404, 405):
            return error_response(404, "page not found")
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.text or exc.reason)
    except Exception as exc:
        log.exception("internal error handling %s %s", request.method, request.path)
        return error_response(
            500, f"internal server error: {type(exc).__name__}: {exc} (details in labagent.log)"
        )


@web.middleware
async def version_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Only matched routes carry "version"; unmatched ones fall through to 404 like dockerd's
    # catch-all, which also never checks the version.
    request[API_VERSION_KEY] = versions.negotiate(request.match_info.get("version"))
    return await handler(request)


async def add_standard_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: the headers dockerd's version/experimental middlewares set."""
    response.headers.update(STANDARD_HEADERS)
