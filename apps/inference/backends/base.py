"""The narrow interface every inference backend offers, so that the predict path does not care
whether the model runs in this process or in TorchServe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from gatehouse.errors import ServiceUnavailable

if TYPE_CHECKING:
    from apps.registry.models import ModelVersion


class BackendUnavailable(ServiceUnavailable):
    """The backend cannot answer now (overloaded, timed out, unreachable); the client may retry.

    Distinct from a refused artifact (``ArtifactTampered``/``ArtifactMissing``), which retrying
    does not cure.
    """

    code = "backend_unavailable"
    default_detail = "The inference backend is temporarily unavailable."


@runtime_checkable
class Backend(Protocol):
    """What the predict path needs from a place where models run, and nothing more.

    A Protocol rather than a base class: backends share no code, and test doubles need not
    inherit anything. Every method is synchronous and may block; call it from a thread, never
    from an event loop.
    """

    name: str

    def load(self, version: ModelVersion) -> None:
        """Make ``version`` ready to serve (verify and load its artifact); idempotent."""
        ...

    def predict(self, version: ModelVersion, rows: list[dict[str, Any]]) -> list[list[float]]:
        """Class probabilities for each row, in the order of the signature's output labels.

        Rows must already be valid for the version's signature (see ``encoding.check_row``).
        """
        ...

    def health(self) -> dict[str, Any]:
        """A JSON-able description of the backend's state, for health checks and metrics."""
        ...

    def unload(self, version: ModelVersion) -> None:
        """Release whatever serving ``version`` holds; a later predict loads it again."""
        ...
