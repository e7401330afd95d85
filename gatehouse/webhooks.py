"""Signed webhook bodies: ``X-Gatehouse-Signature: sha256=<hex HMAC-SHA256 of the body>``."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Gatehouse-Signature"
WEBHOOK_TIMEOUT_S = 5.0


def sign(body: bytes, secret: str) -> str:
    """The value of the signature header: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
