"""``/api/v1/log/``: the latest (or a kept) checkpoint, the public keys, consistency proofs."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Schema
from pydantic import Field

from gatehouse.errors import ValidationFailed
from gatehouse.schemas import ErrorOut
from gatehouse.tlog import signing, tree
from gatehouse.tlog.verify import b64

router = Router(tags=["log"])
ERRORS = {401: ErrorOut, 404: ErrorOut, 422: ErrorOut}


class CheckpointQuery(Schema):
    size: int | None = Field(default=None, ge=1, description="a kept checkpoint's tree size")


@router.get(
    "/log/checkpoint",
    response={200: str, **ERRORS},
    openapi_extra={"responses": {200: {"content": {"text/plain": {}}}}},
)
def get_checkpoint(request: HttpRequest, query: Query[CheckpointQuery]) -> HttpResponse:
    """The latest signed checkpoint (C2SP tlog-checkpoint in a signed note), or a kept one."""
    checkpoint = tree.checkpoint_at(query.size)
    return HttpResponse(checkpoint.note, content_type="text/plain; charset=utf-8")


class PublicKeyOut(Schema):
    origin: str
    key_id: str
    public_key: str = Field(description="C2SP note verifier key: <name>+<key id>+<base64>")
    previous_keys: list[str]


@router.get("/log/public-key", response={200: PublicKeyOut, **ERRORS})
def get_public_key(request: HttpRequest) -> PublicKeyOut:
    """The key that signs checkpoints and promises now, and the earlier ones still trusted."""
    current, *previous = signing.verifier_keys()
    return PublicKeyOut(
        origin=signing.origin(),
        key_id=current.id.hex(),
        public_key=current.text(),
        previous_keys=[k.text() for k in previous],
    )


class ConsistencyQuery(Schema):
    first: int = Field(ge=1, description="the smaller tree size (a kept checkpoint's)")
    second: int = Field(ge=1, description="the larger tree size")


class ConsistencyOut(Schema):
    first: int
    second: int
    proof: list[str] = Field(description="base64 node hashes (RFC 9162 2.1.4)")


@router.get("/log/consistency", response={200: ConsistencyOut, **ERRORS})
def get_consistency(request: HttpRequest, query: Query[ConsistencyQuery]) -> ConsistencyOut:
    """A proof that the tree of ``second`` leaves extends the tree of ``first`` leaves."""
    latest = tree.checkpoint_at()
    if query.second > latest.size:
        raise ValidationFailed.for_field("second", f"the log has {latest.size} leaves")
    proof = tree.consistency_proof(query.first, query.second)
    return ConsistencyOut(first=query.first, second=query.second, proof=[b64(h) for h in proof])
