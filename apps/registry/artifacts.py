"""Content-addressed artifact store: files named by their SHA-256, written atomically,
verified at every read. A file whose content no longer matches its name is refused."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from django.conf import settings
from django.core.files import File

from gatehouse.errors import ApplicationError, PayloadTooLarge

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024


class ArtifactTampered(ApplicationError):
    status_code = 409
    code = "artifact_tampered"
    default_detail = "The stored artifact does not match its recorded SHA-256; it was refused."


class ArtifactMissing(ApplicationError):
    status_code = 409
    code = "artifact_missing"
    default_detail = "The stored artifact is missing."


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int


class ArtifactStore:
    """A directory of files named ``<aa>/<sha256>``; configurable by ``ARTIFACT_STORE_DIR``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or settings.ARTIFACT_STORE_DIR)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.root / sha256[:2] / sha256

    def put(
        self, source: IO[bytes] | File, *, max_bytes: int, field: str = "artifact"
    ) -> StoredFile:
        """Copy ``source`` into the store (temp file, fsync, rename); returns hash and size."""
        self.root.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".incoming-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as tmp:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(
                            f"{field}: larger than the limit of {max_bytes} bytes.",
                            errors=[{"field": field, "message": "too large", "type": "too_large"}],
                        )
                    digest.update(chunk)
                    tmp.write(chunk)
                tmp.flush()
                os.fsync(tmp.fileno())
            sha256 = digest.hexdigest()
            target = self.path(sha256)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, target)
            os.chmod(target, 0o440)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return StoredFile(sha256=sha256, size=size)

    def put_bytes(self, data: bytes, *, max_bytes: int, field: str = "artifact") -> StoredFile:
        import io

        return self.put(io.BytesIO(data), max_bytes=max_bytes, field=field)

    def read_verified(self, sha256: str) -> bytes:
        """The file's bytes, after checking they still hash to ``sha256``."""
        path = self.path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactMissing() from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ArtifactTampered()
        return data

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)


def default_store() -> ArtifactStore:
    return ArtifactStore()
