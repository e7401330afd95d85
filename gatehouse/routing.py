"""Websocket routes of the platform."""

from django.urls import path

from gatehouse.consumers import LiveConsumer

websocket_urlpatterns = [
    path("ws/live/", LiveConsumer.as_asgi(), name="ws_live"),
]
