"""ASGI entry point: HTTP through Django, websockets through Channels with Origin checks."""

from __future__ import annotations

import os
import warnings

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatehouse.settings")
# Django runs each sync view of an ASGI request in a thread of its own, so a kept connection
# would never be reused (Django's docs: no persistent connections under ASGI).
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")
django_asgi_app = get_asgi_application()
# WhiteNoise serves files with a sync iterator; Django warns about it under ASGI. Harmless.
warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous")

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from gatehouse.routing import origin_checked, websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": origin_checked(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))  # type: ignore[arg-type]
        ),
    }
)
