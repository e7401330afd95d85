"""Gatehouse: the platform package (settings, urls, ASGI, Celery, API root, auth, errors).

Named ``gatehouse`` and not ``platform``: a top-level ``platform`` package would shadow the
standard-library module of that name, which ``uuid`` (and so Django) imports.

Importing the package imports nothing else (``gatehouse.tlog.verify`` must run without
Django); the Celery app is loaded when Django starts (``GatehouseConfig.ready``) and by
``celery -A gatehouse``, which finds ``gatehouse.celery``.
"""
