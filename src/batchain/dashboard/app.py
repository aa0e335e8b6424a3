"""The dashboard's web app: one page, a JSON API over a read-only store, and static files.

The page (``static/index.html`` and ``static/dashboard.js``) polls the API and draws every
value with ``textContent``, never as HTML. Charts are drawn by plotly.js, served from the
installed ``plotly`` package (the ``dashboard`` extra): nothing is fetched from the
internet, so the page works offline. The app only answers requests whose ``Host`` is the
address it serves (a web page elsewhere cannot reach it by rebinding a name to 127.0.0.1),
and says so to the browser: scripts and requests from this origin only.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from batchain.dashboard.views import Views
from batchain.errors import BatchainError
from batchain.store.base import Store

__all__ = ["DashboardUnavailable", "create_app", "plotly_js"]

_STATIC = Path(__file__).with_name("static")
_OWN_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
#: what the page may load and reach: this origin only (plotly.js sets inline styles)
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv"}


class DashboardUnavailable(BatchainError):
    """The dashboard cannot run here (its charting library is not installed)."""


def plotly_js() -> Path:
    """plotly.js as the installed ``plotly`` package ships it."""
    if importlib.util.find_spec("plotly") is None:
        raise DashboardUnavailable(
            "the dashboard draws its charts with plotly, which is not installed: "
            "pip install 'batchain[dashboard]'"
        )
    path = Path(str(importlib.resources.files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():
        raise DashboardUnavailable(f"the installed plotly package has no plotly.min.js (looked at {path})")
    return path


def _headers(cache: bool = False) -> dict[str, str]:
    return {
        "Content-Security-Policy": _CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "max-age=86400" if cache else "no-store",
    }


def create_app(
    store: Store, *, report_store: Store | None = None, hosts: list[str] | None = None
) -> Starlette:
    """The dashboard over ``store`` (opened read-only by the caller); cost reports read
    ``report_store`` if given (the same store on a connection of its own). ``hosts``: the
    ``Host`` names it answers (default: the loopback names)."""
    views = Views(store, report_store)
    chart_lib = plotly_js()

    def index(request: Request) -> Response:
        return FileResponse(_STATIC / "index.html", media_type="text/html", headers=_headers())

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "plotly.min.js":
            return FileResponse(chart_lib, media_type="text/javascript", headers=_headers(cache=True))
        if name not in _OWN_FILES:
            return Response("not found", status_code=404, headers=_headers())
        return FileResponse(_STATIC / name, media_type=_OWN_FILES[name], headers=_headers())

    def jobs(request: Request) -> Response:
        try:
            limit = min(10_000, max(1, int(request.query_params.get("limit", "1000"))))
        except ValueError:
            return _error(400, "limit must be a whole number")
        return _json(views.jobs(limit))

    def job(request: Request) -> Response:
        data = views.job(request.path_params["job_id"])
        if data is None:
            return _error(404, f"no job {request.path_params['job_id']!r} in this store")
        return _json(data)

    def results(request: Request) -> Response:
        job_id, fmt = request.path_params["job_id"], request.path_params["fmt"]
        if fmt not in _FORMATS:
            return _error(404, "results come as .jsonl or .csv")
        if store.get_job(job_id) is None:
            return _error(404, f"no job {job_id!r} in this store")
        headers = _headers() | {"Content-Disposition": f'attachment; filename="{job_id}.{fmt}"'}
        return StreamingResponse(views.results(job_id, fmt), media_type=_FORMATS[fmt], headers=headers)

    routes = [
        Route("/", index),
        Route("/static/{name}", static),
        Route("/api/jobs", jobs),
        Route("/api/jobs/{job_id}", job),
        Route("/api/jobs/{job_id}/results.{fmt}", results),
    ]
    middleware = [
        Middleware(TrustedHostMiddleware, allowed_hosts=hosts or ["127.0.0.1", "localhost", "[::1]"]),
        Middleware(GZipMiddleware, minimum_size=1024),
    ]
    return Starlette(routes=routes, middleware=middleware)


def _json(data: Any) -> Response:
    return JSONResponse(data, headers=_headers())


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=_headers())
