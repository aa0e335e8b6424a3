"""``batchain dashboard``: a live, read-only web page over a job store.

:func:`create_app` builds the app over an open store; :func:`serve` opens a store read-only
and serves it until interrupted. The charts need the ``dashboard`` extra (plotly).
"""

from __future__ import annotations

from batchain.dashboard.app import DashboardUnavailable, create_app, plotly_js
from batchain.dashboard.serve import serve

__all__ = ["DashboardUnavailable", "create_app", "plotly_js", "serve"]
