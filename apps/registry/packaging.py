"""Package a model version as a TorchServe archive (.mar) served by ``torchserve_handler``.

No Django here: the function takes plain values, so a Celery task, a management command or a
test can call it. The archive holds the weights, ``gatehouse_model.json`` (architecture, kwargs,
signature, framework, weights hash), the handler and the two modules it needs (``encoding.py``,
``architectures.py``), so the worker encodes rows exactly as the in-process backend does.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from model_archiver.model_archiver_config import ModelArchiverConfig
from model_archiver.model_packaging import generate_model_archive

HERE = Path(__file__).resolve().parent
HANDLER = HERE / "torchserve_handler.py"
SHIPPED_MODULES = (HERE / "encoding.py", HERE / "architectures.py")
MANIFEST_NAME = "gatehouse_model.json"
FORMAT_VERSION = 1
FRAMEWORKS = {"torch_state_dict": "weights.pt", "torchscript": "model.pt"}

# TorchServe names and versions appear in URLs (/predictions/NAME/VERSION) and file names.
# No dot in the name, so "<name>.<version>.mar" is unambiguous.
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
# torch-model-archiver reads extra_files as a comma-separated list of glob patterns.
_GLOB_OR_SEPARATOR = re.compile(r"[,*?\[\]]")


def torchserve_model_name(slug: str) -> str:
    """The TorchServe model name of a family: its slug, refused if outside a safe charset."""
    if not MODEL_NAME_RE.fullmatch(slug):
        raise ValueError(
            f"model name {slug!r} must match {MODEL_NAME_RE.pattern} to be used by TorchServe"
        )
    return slug


def mar_file_name(model_name: str, version: str) -> str:
    """The archive's file name in the model store: one file per version, never overwritten
    by another version of the same model."""
    return f"{torchserve_model_name(model_name)}.{_checked_version(version)}.mar"


def _checked_version(version: str) -> str:
    if not VERSION_RE.fullmatch(version):
        raise ValueError(f"version {version!r} must match {VERSION_RE.pattern}")
    return version


@contextmanager
def _staging_lock(model_name: str) -> Iterator[None]:
    """Serialise archiver runs for one model name, across threads and processes.

    torch-model-archiver stages files in ``<system temp>/<model name>/``, which it deletes
    first: two concurrent builds of the same name would destroy each other's files.
    """
    lock_path = Path(tempfile.gettempdir()) / f".gatehouse-mar-{model_name}.lock"
    with open(lock_path, "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            shutil.rmtree(Path(tempfile.gettempdir()) / model_name, ignore_errors=True)
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def build_mar(
    *,
    model_name: str,
    version: str,
    framework: str,
    architecture: str,
    architecture_kwargs: dict[str, Any],
    signature: dict[str, Any],
    weights: bytes,
    export_dir: Path,
) -> Path:
    """Write ``<export_dir>/<model_name>.<version>.mar`` and return its path.

    ``model_name`` is the family slug (see ``torchserve_model_name``); ``weights`` is a torch
    state_dict of ``architecture`` (framework ``torch_state_dict``) or a TorchScript archive
    (``torchscript``). The archive is built in a private directory and moved into place
    atomically, replacing an earlier archive of the same version, so TorchServe never reads
    a half-written file. Raises ValueError on a bad name, version, framework or architecture.
    """
    name = torchserve_model_name(model_name)
    version = _checked_version(version)
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework {framework!r} is not one of {', '.join(FRAMEWORKS)}")
    if framework == "torch_state_dict":
        from apps.registry.architectures import ARCHITECTURES  # imports torch: only here

        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture {architecture!r} is not allow-listed")
    export_dir = Path(export_dir).resolve()
    if not export_dir.is_dir():
        raise ValueError(f"export directory {export_dir} does not exist")
    target = export_dir / mar_file_name(name, version)

    weights_file = FRAMEWORKS[framework]
    spec = {
        "format": FORMAT_VERSION,
        "model_name": name,
        "version": version,
        "framework": framework,
        "architecture": architecture,
        "architecture_kwargs": architecture_kwargs,
        "signature": signature,
        "weights_file": weights_file,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
    }

    with tempfile.TemporaryDirectory(prefix="gatehouse-mar-in-") as inputs_name:
        inputs = Path(inputs_name)
        if _GLOB_OR_SEPARATOR.search(str(inputs)):
            raise ValueError(f"temporary directory {inputs} has characters the archiver misreads")
        (inputs / weights_file).write_bytes(weights)
        (inputs / MANIFEST_NAME).write_text(json.dumps(spec, indent=2), encoding="utf-8")
        for source in (HANDLER, *SHIPPED_MODULES):
            shutil.copyfile(source, inputs / source.name)
        extra_files = [inputs / m.name for m in SHIPPED_MODULES] + [inputs / MANIFEST_NAME]

        # The output directory sits in export_dir so that the final rename is atomic.
        with tempfile.TemporaryDirectory(prefix=".gatehouse-mar-out-", dir=export_dir) as out:
            config = ModelArchiverConfig(
                model_name=name,
                handler=str(inputs / HANDLER.name),
                version=version,
                serialized_file=str(inputs / weights_file),
                extra_files=",".join(str(p) for p in extra_files),
                export_path=out,
                archive_format="default",
                force=True,
            )
            with _staging_lock(name):
                generate_model_archive(config)
            os.replace(Path(out) / f"{name}.mar", target)
    return target
