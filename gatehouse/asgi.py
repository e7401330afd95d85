"""ASGI entry point: HTTP through Django's WSGI handler on long-lived threads (a2wsgi), websockets
through Channels with Origin checks; one server process serves both on one port.

Django's own ASGI handler runs each request's sync code in a new thread, so no database connection
is ever reused and every request pays the sync/async hand-offs. Measured side by side with
`make bench` (uvicorn, 2 workers, docs/performance.md): 82.6 -> 140.6 req/s and 18.8 -> 10.5 ms of
CPU per prediction. ``GATEHOUSE_HTTP_THREADS`` (default 4) threads per process run the requests
and keep their connections (``CONN_MAX_AGE``); size threads x processes against the database's
connection limit. ``GATEHOUSE_HTTP_INTERFACE=asgi`` serves HTTP with Django's ASGI handler instead
(kept for comparison).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from a2wsgi import WSGIMiddleware
from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatehouse.settings")


def _http_application() -> Any:
    if os.environ.get("GATEHOUSE_HTTP_INTERFACE", "wsgi") == "asgi":
        os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")  # never reused under ASGI
        from django.core.asgi import get_asgi_application

        # WhiteNoise serves files with a sync iterator; Django warns about it under ASGI.
        warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous")
        return get_asgi_application()
    wsgi = get_wsgi_application()  # sets Django up: settings are readable from here on
    return WSGIMiddleware(wsgi, workers=settings.HTTP_THREADS)  # type: ignore[arg-type]


http_application = _http_application()

# The decision log's sequencer (active or standing by) runs in every web process unless it runs
# as a process of its own (LOG_SEQUENCER_EMBEDDED=false, deploy/).
from gatehouse.tlog.sequencer import start_in_background  # noqa: E402

start_in_background()

# Channels' auth middleware and the consumers need Django set up (above).
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from gatehouse.routing import origin_checked, websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": origin_checked(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))  # type: ignore[arg-type]
        ),
    }
)
