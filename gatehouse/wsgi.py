"""WSGI entry point, for a WSGI tier serving HTTP only (websockets need ASGI)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatehouse.settings")
application = get_wsgi_application()

from gatehouse.tlog.sequencer import start_in_background  # noqa: E402

start_in_background()  # the decision log's sequencer (see asgi.py)
