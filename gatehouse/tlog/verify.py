"""Check a Gatehouse decision receipt offline: RFC 9162 proofs and C2SP signed notes.

This file imports only the standard library and ``cryptography``: copy it anywhere and run

    python -m gatehouse.tlog.verify receipt.json --public-key key.txt
    python verify.py receipt.json --public-key key.txt

It prints each check it made and exits 0 when every one passed, 1 when one failed (naming it),
2 when the input could not be read. The server uses the same functions to build and check its
log, so there is one implementation of the hashing, the proofs and the note format.

Formats: leaf hash = SHA-256(0x00 || leaf), node = SHA-256(0x01 || left || right) (RFC 9162
2.1.1); checkpoints are C2SP tlog-checkpoint bodies inside C2SP signed notes (Ed25519); a
receipt's proof is a C2SP tlog-proof (index, audit path, checkpoint).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HASH_SIZE = 32
ALG_ED25519 = 0x01
PROOF_HEADER = "c2sp.org/tlog-proof@v1"
PROMISE_HEADER = "gatehouse.dev/decision-promise@v1"
RECEIPT_FORMAT = "gatehouse.dev/receipt@v1"
SIGNATURE_PREFIX = "\u2014 "  # an em dash and a space start every signature line


class VerificationError(Exception):
    """A check failed; the message names which one."""


# --- RFC 9162 hashing --------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2): where the RFC splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


EMPTY_ROOT = hashlib.sha256(b"").digest()


def push(frontier: list[tuple[int, bytes]], leaf: bytes) -> list[tuple[int, bytes]]:
    """Append a leaf hash to a tree's right edge (``(level, hash)`` of its perfect subtrees, left
    to right), in place; returns the interior nodes it completed, lowest first."""
    level, node, made = 0, leaf, []
    while frontier and frontier[-1][0] == level:
        node = node_hash(frontier.pop()[1], node)
        level += 1
        made.append((level, node))
    frontier.append((level, node))
    return made


def root_of(hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (RFC 9162 2.1.1), iteratively; the empty tree hashes to SHA-256("")."""
    frontier: list[tuple[int, bytes]] = []
    for h in hashes:
        push(frontier, h)
    return fold(h for _, h in frontier) if frontier else EMPTY_ROOT


def fold(perfect_subtrees: Any) -> bytes:
    """The root over consecutive perfect subtrees given left to right (largest first)."""
    nodes = list(perfect_subtrees)
    root = nodes[-1]
    for node in reversed(nodes[:-1]):
        root = node_hash(node, root)
    return root


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise VerificationError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 2.1.3.2: ``leaf`` (a leaf hash) is at ``index`` in the tree of ``size`` with
    ``root``. Raises VerificationError naming what failed."""
    if index < 0 or size <= 0 or index >= size:
        raise VerificationError(f"index {index} is outside a tree of size {size}")
    _check_hash(leaf, "the leaf hash")
    _check_hash(root, "the root hash")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof hash {i}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise VerificationError("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("the inclusion proof is shorter than the tree is deep")
    if r != root:
        raise VerificationError("the inclusion proof does not lead to the root hash")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """RFC 9162 2.1.4.2: the tree of ``size2`` (``root2``) extends the tree of ``size1``
    (``root1``) without rewriting it. Raises VerificationError naming what failed."""
    if size1 < 0 or size2 < 0:
        raise VerificationError("tree sizes cannot be negative")
    if size2 < size1:
        raise VerificationError(f"the second tree ({size2}) is smaller than the first ({size1})")
    if size1 == 0:
        raise VerificationError("a consistency proof from the empty tree proves nothing")
    if size1 == size2:  # as the reference: equal roots, whatever they are, and no proof
        if proof:
            raise VerificationError("trees of equal size need an empty consistency proof")
        if root1 != root2:
            raise VerificationError("trees of equal size have different roots")
        return
    _check_hash(root1, "the first root hash")
    _check_hash(root2, "the second root hash")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof hash {i}")
    if not proof:
        raise VerificationError("the consistency proof is empty")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # an exact power of two: the old root is the first node
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("the consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("the consistency proof is shorter than the tree is deep")
    if fr != root1:
        raise VerificationError("the consistency proof does not lead to the first root")
    if sr != root2:
        raise VerificationError("the consistency proof does not lead to the second root")


# --- C2SP signed notes and keys ----------------------------------------------------------------


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise VerificationError(f"{what} is not valid base64") from exc


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decimal(text: str, what: str) -> int:
    """A decimal number of at most 20 ASCII digits (tree sizes and indexes are 64-bit)."""
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise VerificationError(f"{what} {text[:30]!r} is not a number")
    return int(text)


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise VerificationError(f"{what} is not UTF-8 text") from exc


def _check_key_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise VerificationError(f"key name {name!r} is empty or has a space or '+'")


def key_id(name: str, public_key: bytes) -> bytes:
    """C2SP signed-note key id: SHA-256(name || 0x0A || 0x01 || key)[:4] for Ed25519."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


@dataclass(frozen=True)
class VerifierKey:
    """A public key as a C2SP/sumdb verifier key: ``<name>+<hex key id>+<base64(0x01||key)>``."""

    name: str
    id: bytes
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        parts = text.strip().split("+", 2)  # base64 may hold '+'; names may not
        if len(parts) != 3:
            raise VerificationError("a verifier key reads <name>+<key id>+<base64 key>")
        name, hex_id, encoded = parts
        _check_key_name(name)
        raw = _b64decode(encoded, "the verifier key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise VerificationError("the verifier key is not an Ed25519 key")
        public = raw[1:]
        if hex_id.lower() != key_id(name, public).hex():
            raise VerificationError("the verifier key's id does not match its name and key")
        return cls(name, key_id(name, public), public)

    def text(self) -> str:
        return f"{self.name}+{self.id.hex()}+{b64(bytes([ALG_ED25519]) + self.public_key)}"

    def verifies(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class SignerKey:
    """A private key as a C2SP/sumdb signer key: ``PRIVATE+KEY+<name>+<hex id>+<base64>``."""

    name: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> SignerKey:
        _check_key_name(name)
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def parse(cls, text: str) -> SignerKey:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise VerificationError("a signer key reads PRIVATE+KEY+<name>+<key id>+<base64>")
        name, hex_id, encoded = parts[2:]
        _check_key_name(name)
        raw = _b64decode(encoded, "the signer key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise VerificationError("the signer key is not an Ed25519 key")
        key = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if hex_id.lower() != key.verifier.id.hex():
            raise VerificationError("the signer key's id does not match its name and key")
        return key

    @property
    def verifier(self) -> VerifierKey:
        from cryptography.hazmat.primitives import serialization

        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return VerifierKey(self.name, key_id(self.name, public), public)

    def text(self) -> str:
        from cryptography.hazmat.primitives import serialization

        seed = self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        raw = bytes([ALG_ED25519]) + seed
        return f"PRIVATE+KEY+{self.name}+{self.verifier.id.hex()}+{b64(raw)}"

    def sign_note(self, body: str) -> str:
        """The C2SP signed note of ``body`` (which ends in a newline) with this key."""
        if not body.endswith("\n") or "\n\n" in body:
            raise ValueError("a note body ends in one newline and has no blank line")
        signature = self.private_key.sign(body.encode())
        return f"{body}\n{SIGNATURE_PREFIX}{self.name} {b64(self.verifier.id + signature)}\n"


def open_note(note: str, keys: Sequence[VerifierKey]) -> tuple[str, VerifierKey]:
    """The body of a signed note and the known key that signed it; raises if no known key did
    (signatures by unknown keys, e.g. witnesses', are allowed and ignored)."""
    if not note.endswith("\n"):
        raise VerificationError("the signed note does not end in a newline")
    body, sep, signatures = note.rpartition("\n\n")
    if not sep or not body:
        raise VerificationError("the signed note has no blank line before its signatures")
    body += "\n"
    lines = signatures[:-1].split("\n")
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise VerificationError(f"malformed signature line {line[:40]!r}")
        name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
        raw = _b64decode(encoded, "a signature")
        if len(raw) < 5:
            raise VerificationError("a signature is too short")
        for key in keys:
            if key.name == name and key.id == raw[:4]:
                if not key.verifies(_utf8(body, "the signed note"), raw[4:]):
                    raise VerificationError(f"the signature of {name} does not verify")
                return body, key
    names = ", ".join(sorted({k.name for k in keys})) or "none"
    raise VerificationError(f"the note is not signed by a known key (known: {names})")


# --- checkpoints, promises, proofs -------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{b64(self.root)}\n"

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise VerificationError("a checkpoint has an origin, a size and a root line")
        origin, size, root = lines[0], lines[1], lines[2]
        if not origin:
            raise VerificationError("the checkpoint's origin is empty")
        if size != "0" and size.startswith("0"):
            raise VerificationError(f"the checkpoint's tree size {size[:30]!r} has a leading 0")
        tree_size = _decimal(size, "the checkpoint's tree size")
        root_hash = _b64decode(root, "the checkpoint's root hash")
        _check_hash(root_hash, "the checkpoint's root hash")
        return cls(origin, tree_size, root_hash)


def open_checkpoint(note: str, keys: Sequence[VerifierKey], origin: str = "") -> Checkpoint:
    """A checkpoint whose signature verifies with one of ``keys`` named as its origin (and
    ``origin`` when given): another log's or a witness's key cannot stand in for the log's."""
    body, key = open_note(note, [k for k in keys if not origin or k.name == origin])
    checkpoint = Checkpoint.parse(body)
    if checkpoint.origin != key.name:
        raise VerificationError(
            f"the checkpoint is from {checkpoint.origin!r}, signed by {key.name!r}"
        )
    return checkpoint


@dataclass(frozen=True)
class Promise:
    """A signed promise to integrate a leaf (like CT's SCT): origin, record id, leaf hash, time."""

    origin: str
    record_id: str
    leaf_hash: bytes
    time: str

    def body(self) -> str:
        for value in (self.origin, self.record_id, self.time):
            if not value or "\n" in value:
                raise ValueError("promise fields are non-empty single lines")
        lines = [PROMISE_HEADER, self.origin, self.record_id, b64(self.leaf_hash), self.time]
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def parse(cls, body: str) -> Promise:
        lines = body.split("\n")
        if len(lines) != 6 or lines[0] != PROMISE_HEADER or lines[-1] != "":
            raise VerificationError(f"the promise is not a {PROMISE_HEADER} note")
        leaf = _b64decode(lines[3], "the promise's leaf hash")
        _check_hash(leaf, "the promise's leaf hash")
        return cls(lines[1], lines[2], leaf, lines[4])


@dataclass(frozen=True)
class InclusionProof:
    """A C2SP tlog-proof: the leaf index, its audit path and the checkpoint (signed note)."""

    index: int
    path: list[bytes]
    checkpoint: str

    def text(self) -> str:
        hashes = "".join(f"{b64(h)}\n" for h in self.path)
        return f"{PROOF_HEADER}\nindex {self.index}\n{hashes}\n{self.checkpoint}"

    @classmethod
    def parse(cls, text: str) -> InclusionProof:
        head, sep, checkpoint = text.partition("\n\n")
        if not sep:
            raise VerificationError("the proof has no blank line before its checkpoint")
        lines = head.split("\n")
        if lines[0] != PROOF_HEADER:
            raise VerificationError(f"the proof does not start with {PROOF_HEADER}")
        rest = lines[1:]
        if rest and rest[0].startswith("extra "):
            rest = rest[1:]
        if not rest or not rest[0].startswith("index "):
            raise VerificationError("the proof has no index line")
        index = _decimal(rest[0][len("index ") :], "the proof's index")
        path = [_b64decode(line, "a proof hash") for line in rest[1:]]
        return cls(index, path, checkpoint)


@dataclass
class Report:
    """What a receipt proved, line by line."""

    checks: list[str]
    integrated: bool = False


def verify_receipt(receipt: dict[str, Any], keys: Sequence[VerifierKey]) -> Report:
    """Check a receipt (as served by ``GET /api/v1/decisions/{id}/receipt``) with the log's
    public keys. Raises VerificationError naming the first check that failed."""
    if not isinstance(receipt, dict) or receipt.get("format") != RECEIPT_FORMAT:
        raise VerificationError(f"this is not a {RECEIPT_FORMAT} receipt")
    report = Report(checks=[])
    try:
        leaf = _utf8(str(receipt["leaf"]), "the leaf")
        claimed = _b64decode(str(receipt["leaf_hash"]), "the leaf hash")
        record_id = str(receipt["record_id"])
        promise_note = str(receipt["promise"])
    except KeyError as exc:
        raise VerificationError(f"the receipt has no {exc.args[0]!r}") from exc
    try:
        fields = json.loads(leaf)
    except (ValueError, RecursionError) as exc:
        raise VerificationError("the leaf is not JSON") from exc
    if not isinstance(fields, dict) or str(fields.get("id")) != record_id:
        raise VerificationError("the leaf is not the record the receipt names")
    if leaf_hash(leaf) != claimed:
        raise VerificationError("the leaf hash is not SHA-256(0x00 || leaf)")
    report.checks.append(f"leaf: the record {record_id} hashes to {claimed.hex()}")

    body, key = open_note(promise_note, keys)
    promise = Promise.parse(body)
    if promise.origin != key.name:
        raise VerificationError(f"the promise is from {promise.origin!r}, not {key.name!r}")
    if promise.record_id != record_id or promise.leaf_hash != claimed:
        raise VerificationError("the promise is for another record or leaf")
    made = str(fields.get("created_at", "")).replace("+00:00", "Z")
    if made and promise.time != made:
        raise VerificationError("the promise's time is not the record's")
    if receipt.get("kind") not in (None, fields.get("kind")):
        raise VerificationError("the receipt's kind is not the leaf's")
    report.checks.append(
        f"promise: {key.name} (key {key.id.hex()}) promised at {promise.time} to log this leaf"
    )

    proof_text = receipt.get("proof")
    if not proof_text:
        report.checks.append("inclusion: not integrated yet; ask again for the proof")
        return report
    proof = InclusionProof.parse(str(proof_text))
    checkpoint = open_checkpoint(proof.checkpoint, keys, origin=promise.origin)
    report.checks.append(
        f"checkpoint: {checkpoint.origin} signed a tree of {checkpoint.size} leaves, "
        f"root {checkpoint.root.hex()}"
    )
    # The receipt's own copies of what the proof holds must agree with it: a reader of the
    # receipt must not be shown a tree size, root or checkpoint that was not proved.
    for name, proved in (
        ("leaf_index", proof.index),
        ("tree_size", checkpoint.size),
        ("root_hash", b64(checkpoint.root)),
        ("checkpoint", proof.checkpoint),
    ):
        if receipt.get(name) is not None and receipt[name] != proved:
            raise VerificationError(f"the receipt's {name} is not the proof's")
    if receipt.get("origin") not in (None, checkpoint.origin):
        raise VerificationError("the receipt's origin is not the checkpoint's")
    verify_inclusion(proof.index, checkpoint.size, claimed, proof.path, checkpoint.root)
    report.checks.append(
        f"inclusion: leaf {proof.index} is in that tree ({len(proof.path)} proof hashes)"
    )
    report.integrated = True
    return report


def _read_keys(paths: Sequence[str]) -> list[VerifierKey]:
    keys = []
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                keys.append(VerifierKey.parse(line))
    return keys


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gatehouse.tlog.verify",
        description="Check a Gatehouse decision receipt offline against the log's public key.",
    )
    parser.add_argument("receipt", help="the receipt JSON (GET /api/v1/decisions/{id}/receipt)")
    parser.add_argument(
        "--public-key",
        action="append",
        required=True,
        help="a file with the log's verifier key (GET /api/v1/log/public-key); repeatable",
    )
    args = parser.parse_args(argv)
    try:
        keys = _read_keys(args.public_key)
        receipt = json.loads(Path(args.receipt).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, VerificationError) as exc:
        print(f"cannot read the input: {exc}", file=sys.stderr)
        return 2
    try:
        report = verify_receipt(receipt, keys)
    except VerificationError as exc:
        print(f"FAILED: {exc}")
        return 1
    except (ValueError, TypeError, RecursionError) as exc:  # a shape no check foresaw
        print(f"FAILED: the receipt is malformed ({type(exc).__name__})")
        return 1
    for line in report.checks:
        print(f"ok  {line}")
    print("VERIFIED" if report.integrated else "PROMISED (not yet integrated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
