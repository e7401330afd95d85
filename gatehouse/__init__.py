"""Gatehouse: the platform package (settings, urls, ASGI, Celery, API root, auth, errors).

Named ``gatehouse`` and not ``platform``: a top-level ``platform`` package would shadow the
standard-library module of that name, which ``uuid`` (and so Django) imports.
"""

from gatehouse.celery import app as celery_app

__all__ = ["celery_app"]
