"""The decision log: RFC 9162 proofs against the reference vectors, the stored tree, tamper
detection by verify_decisions, receipts (API, promise, offline verifier), checkpoints, keys,
witnesses, and the predict path writing without a shared lock."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.inference.models import Decision
from gatehouse.tlog import signing, tree
from gatehouse.tlog import verify as v
from gatehouse.tlog.models import LogCheckpoint, LogLeaf, LogNode
from gatehouse.tlog.sequencer import Sequencer
from gatehouse.tlog.verification import verify_log
from tests.decision_log import integrate, integrated_and_verified
from tests.test_inference import predict

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT.parent / "shared" / "vectors" / "rfc6962"
# The leaves of RFC 6962's test data, over which the reference vectors are computed.
RFC_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]


def _vectors(kind: str) -> list[tuple[str, dict]]:
    if not VECTORS.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the reference vectors are missing at {VECTORS}")
        pytest.skip("../shared/vectors/rfc6962 is not beside this checkout")
    cases = [
        (str(p.relative_to(VECTORS)), json.loads(p.read_text()))
        for p in VECTORS.glob(f"{kind}/**/*.json")
    ]
    assert len(cases) > 50
    return sorted(cases, key=lambda c: c[0])


def _b(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


# --- the reference vectors ------------------------------------------------------------------


def test_inclusion_verification_agrees_with_every_reference_vector():
    for name, case in _vectors("inclusion"):
        try:
            v.verify_inclusion(
                case["leafIdx"],
                case["treeSize"],
                _b(case["leafHash"]),
                [_b(p) for p in case["proof"] or []],
                _b(case["root"]),
            )
            failed = False
        except v.VerificationError:
            failed = True
        assert failed == case["wantErr"], f"{name}: {case.get('desc')}"


def test_consistency_verification_agrees_with_every_reference_vector():
    for name, case in _vectors("consistency"):
        try:
            v.verify_consistency(
                case["size1"],
                case["size2"],
                [_b(p) for p in case["proof"] or []],
                _b(case["root1"]),
                _b(case["root2"]),
            )
            failed = False
        except v.VerificationError:
            failed = True
        assert failed == case["wantErr"], f"{name}: {case.get('desc')}"


@pytest.mark.django_db
def test_the_stored_tree_builds_the_reference_roots_and_proofs():
    tree.enqueue("rfc", [tree.Entry(str(i), leaf) for i, leaf in enumerate(RFC_LEAVES)])
    sequencer = Sequencer()
    assert sequencer.acquire()
    for _ in RFC_LEAVES:  # one leaf per pass: a checkpoint at every size 1..8
        sequencer.integrate(limit=1)
    roots = {c.size: bytes(c.root) for c in LogCheckpoint.objects.all()}
    assert sorted(roots) == list(range(1, 9))
    for size, root in roots.items():
        assert root == v.root_of([v.leaf_hash(x) for x in RFC_LEAVES[:size]])
        assert tree.root(size) == root
    checked = 0
    for _, case in _vectors("inclusion"):
        if (
            not case["wantErr"]
            and case["treeSize"] <= 8
            and _b(case["root"]) == roots.get(case["treeSize"])
        ):
            assert tree.inclusion_proof(case["leafIdx"], case["treeSize"]) == [
                _b(p) for p in case["proof"] or []
            ]
            checked += 1
    for _, case in _vectors("consistency"):
        if not case["wantErr"] and 0 < case["size1"] < case["size2"] <= 8:
            assert (_b(case["root1"]), _b(case["root2"])) == (
                roots[case["size1"]],
                roots[case["size2"]],
            )
            assert tree.consistency_proof(case["size1"], case["size2"]) == [
                _b(p) for p in case["proof"]
            ]
            checked += 1
    assert checked >= 5
    # Every proof the stored tree gives for every pair verifies.
    for size in range(1, 9):
        for index in range(size):
            v.verify_inclusion(
                index,
                size,
                v.leaf_hash(RFC_LEAVES[index]),
                tree.inclusion_proof(index, size),
                roots[size],
            )
        for old in range(1, size):
            v.verify_consistency(
                old, size, tree.consistency_proof(old, size), roots[old], roots[size]
            )


def test_proofs_are_logarithmic_in_a_large_simulated_tree():
    size = 1_000_003
    plan = tree.inclusion_plan(123_457, size)
    assert len(plan) <= 21
    assert sum(len(part) for part in plan) <= 2 * 21
    assert len(tree.consistency_plan(500_001, size)) <= 2 * 21


# --- decisions in the log ---------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("without_consent_check", "isolated_serving")


@pytest.fixture
def caller(api_key, v1):
    user, raw = api_key()
    return user, {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def _decisions(client, caller, n=5) -> list[Decision]:
    ids = []
    for i in range(n):
        response = predict(client, caller[1], {"subject": f"c-{i}"})
        assert response.status_code == 200, response.content
        ids.append(response.json()["predictions"][0]["decision_id"])
    return [Decision.objects.get(pk=i) for i in ids]


def _leaf(decision: Decision) -> LogLeaf:
    return LogLeaf.objects.get(kind="decision", ref=str(decision.pk))


@pytest.mark.django_db
def test_the_predict_transaction_only_inserts(client, caller):
    _decisions(client, caller, n=2)
    with CaptureQueriesContext(connection) as ctx:
        assert predict(client, caller[1]).status_code == 200
    sql = [q["sql"].upper() for q in ctx.captured_queries]
    log_tables = ("GATEHOUSE_LOGCHECKPOINT", "GATEHOUSE_LOGNODE", "GATEHOUSE_LOGLEASE")
    assert not [q for q in sql if "FOR UPDATE" in q or any(t in q for t in log_tables)]
    writes = [q for q in sql if "GATEHOUSE_LOGLEAF" in q or "INFERENCE_DECISION" in q]
    assert [q.split()[0] for q in writes] == ["INSERT", "INSERT"]


@pytest.mark.django_db
def test_decisions_are_integrated_in_order_and_the_log_verifies(client, caller):
    decisions = _decisions(client, caller)
    assert LogLeaf.objects.filter(kind="decision", idx=None).count() == 5
    queued = verify_log()  # before any pass: queued leaves are in the log, not inserted around it
    assert (queued.ok, queued.pending) == (True, LogLeaf.objects.count()), queued
    result = integrated_and_verified()
    assert result.ok, result
    indexes = [_leaf(d).idx for d in decisions]
    assert indexes == sorted(indexes)
    assert len(set(indexes)) == 5
    assert result.size == LogLeaf.objects.count() == result.leaves


@pytest.mark.django_db
def test_an_edited_record_is_named(client, caller):
    decisions = _decisions(client, caller)
    integrate()
    victim = decisions[2]
    Decision.objects.filter(pk=victim.pk).update(route="canary")
    result = verify_log()
    assert (result.ok, result.first_bad) == (False, f"decision {victim.pk}")
    assert "was edited" in result.problem


@pytest.mark.django_db
def test_an_edited_output_or_input_is_caught_by_the_payload_digest(client, caller):
    decisions = _decisions(client, caller)
    integrate()
    a, b = decisions[1], decisions[3]
    Decision.objects.filter(pk=a.pk).update(label="good" if a.label == "bad" else "bad")
    result = verify_log()
    assert (result.ok, result.first_bad) == (False, f"decision {a.pk}")
    assert "payload was edited" in result.problem
    Decision.objects.filter(pk=a.pk).update(label=a.label)
    Decision.objects.filter(pk=b.pk).update(inputs={**b.inputs, "income": 1.0}, payload_salt="")
    assert verify_log().first_bad == f"decision {b.pk}"


@pytest.mark.django_db
def test_a_deleted_record_is_named(client, caller):
    decisions = _decisions(client, caller)
    integrate()
    Decision.objects.filter(pk=decisions[1].pk).delete()
    result = verify_log()
    assert (result.ok, result.first_bad) == (False, f"decision {decisions[1].pk}")
    assert "was deleted" in result.problem


@pytest.mark.django_db
def test_reordered_leaves_are_caught_by_the_stored_nodes(client, caller):
    decisions = _decisions(client, caller, n=4)
    integrate()
    a, b = _leaf(decisions[0]), _leaf(decisions[1])
    LogLeaf.objects.filter(pk=a.pk).update(idx=-1)
    LogLeaf.objects.filter(pk=b.pk).update(idx=a.idx)
    LogLeaf.objects.filter(pk=a.pk).update(idx=b.idx)
    result = verify_log()
    assert not result.ok
    assert "reordered or replaced" in result.problem
    assert result.first_bad == f"leaf #{min(a.idx, b.idx) & ~1}"


@pytest.mark.django_db
def test_a_record_inserted_around_the_log_is_named(client, caller):
    (decision,) = _decisions(client, caller, n=1)
    integrate()
    copy = Decision.objects.get(pk=decision.pk)
    copy.pk = None
    copy.id = "00000000-0000-4000-8000-000000000001"
    copy.save(force_insert=True)
    result = verify_log()
    assert (result.ok, result.first_bad) == (False, f"decision {copy.id}")
    assert "not in the log" in result.problem


@pytest.mark.django_db
def test_truncation_and_rewritten_history_are_caught_by_the_signed_checkpoints(client, caller):
    _decisions(client, caller, n=4)
    integrate()
    size = tree.integrated_size()
    last = LogLeaf.objects.get(idx=size - 1)
    LogNode.objects.all().delete()
    LogLeaf.objects.filter(pk=last.pk).delete()
    result = verify_log()
    assert not result.ok
    assert "truncated" in result.problem or "nodes are missing" in result.problem
    # Rebuilt nodes over the shorter tree do not help: the checkpoint was signed.
    hashes = [bytes(h) for h in LogLeaf.objects.order_by("idx").values_list("leaf_hash", flat=True)]
    level = hashes
    depth = 0
    while len(level) > 1:
        depth += 1
        level = [v.node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        LogNode.objects.bulk_create(
            LogNode(level=depth, idx=i, hash=h) for i, h in enumerate(level)
        )
    assert "truncated" in verify_log().problem


@pytest.mark.django_db
def test_a_forged_checkpoint_signature_is_caught(client, caller):
    _decisions(client, caller, n=2)
    integrate()
    checkpoint = LogCheckpoint.objects.last()
    forged = v.SignerKey.generate(signing.origin()).sign_note(
        checkpoint.note.split("\n\n")[0] + "\n"
    )
    LogCheckpoint.objects.filter(pk=checkpoint.pk).update(note=forged)
    result = verify_log()
    assert (result.ok, result.first_bad) == (False, f"checkpoint {checkpoint.size}")
    assert "not signed by a known key" in result.problem


@pytest.mark.django_db
def test_an_edited_or_deleted_approval_is_caught_like_a_tampered_decision(client, caller):
    from auditlog.models import LogEntry

    integrate()
    assert verify_log().ok
    approval = LogEntry.objects.filter(content_type__model="versiontransition").first()
    assert approval is not None, "the approval of v1 was audited"
    LogEntry.objects.filter(pk=approval.pk).update(
        changes={"to_status": ["", "approved-by-nobody"]}
    )
    result = verify_log()
    assert (result.ok, result.first_bad) == (False, f"audit entry {approval.pk}")
    LogEntry.objects.filter(pk=approval.pk).delete()
    assert "was deleted" in verify_log().problem


@pytest.mark.django_db
def test_verify_decisions_command_reports_and_fails_on_tampering(client, caller, capsys):
    decisions = _decisions(client, caller, n=3)
    call_command("verify_decisions", "--integrate")
    out = capsys.readouterr().out
    assert "decision log verified" in out
    Decision.objects.filter(pk=decisions[0].pk).update(route="canary")
    with pytest.raises(CommandError, match=f"decision {decisions[0].pk}"):
        call_command("verify_decisions")


@pytest.mark.django_db
def test_verify_decisions_proves_growth_from_a_checkpoint_kept_elsewhere(
    client, caller, tmp_path, capsys
):
    _decisions(client, caller, n=3)
    integrate()
    kept = tmp_path / "witness.checkpoint"
    kept.write_text(LogCheckpoint.objects.last().note)
    _decisions(client, caller, n=4)
    integrate()
    call_command("verify_decisions", "--checkpoint", str(kept))
    assert "grew append-only" in capsys.readouterr().out
    # A checkpoint of another history (same size, another root) is refused.
    body = v.Checkpoint(signing.origin(), 3, b"\x07" * 32).body()
    kept.write_text(signing.signer().sign_note(body))
    with pytest.raises(CommandError, match="consistency proof"):
        call_command("verify_decisions", "--checkpoint", str(kept))


# --- receipts -----------------------------------------------------------------------------------


def _receipt(client, headers, decision_id, **query):
    return client.get(f"/api/v1/decisions/{decision_id}/receipt", query, **headers)


@pytest.mark.django_db
def test_the_reply_carries_a_signed_promise_and_the_receipt_follows(client, caller, make_user):
    response = predict(client, caller[1])
    (row,) = response.json()["predictions"]
    keys = signing.verifier_keys()
    body, _ = v.open_note(row["receipt"]["promise"], keys)
    promise = v.Promise.parse(body)
    assert (promise.record_id, v.b64(promise.leaf_hash)) == (
        row["decision_id"],
        row["receipt"]["leaf_hash"],
    )

    pending = _receipt(client, caller[1], row["decision_id"])
    assert pending.status_code == 202
    assert pending["Retry-After"] == "1"
    assert pending.json()["status"] == "pending"
    report = v.verify_receipt(pending.json(), keys)
    assert not report.integrated

    integrate()
    first = _receipt(client, caller[1], row["decision_id"])
    assert first.status_code == 200
    assert v.verify_receipt(first.json(), keys).integrated
    size = first.json()["tree_size"]
    _decisions(client, caller, n=3)
    integrate()
    later = _receipt(client, caller[1], row["decision_id"]).json()
    assert later["tree_size"] > size
    assert v.verify_receipt(later, keys).integrated
    earlier = _receipt(client, caller[1], row["decision_id"], tree_size=size)
    assert (earlier.status_code, earlier.json()["tree_size"]) == (200, size)
    assert _receipt(client, caller[1], row["decision_id"], tree_size=size + 1000).status_code == 422

    _, other = caller[0], make_user(username="stranger")
    client.force_login(other)
    assert client.get(row["receipt"]["url"]).status_code == 404


@pytest.fixture
def receipt_files(client, caller, tmp_path):
    (row,) = predict(client, caller[1]).json()["predictions"]
    integrate()
    receipt = _receipt(client, caller[1], row["decision_id"]).json()
    key = tmp_path / "key.txt"
    key.write_text(client.get("/api/v1/log/public-key", **caller[1]).json()["public_key"] + "\n")
    return receipt, key, tmp_path


def _verifier(receipt_path: Path, key: Path) -> subprocess.CompletedProcess[str]:
    # No Django: the verifier runs with the standard library and cryptography alone.
    return subprocess.run(
        [
            sys.executable,
            "-I",
            str(ROOT / "gatehouse" / "tlog" / "verify.py"),
            str(receipt_path),
            "--public-key",
            str(key),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ.get("PATH", "")},
    )


@pytest.mark.django_db
def test_the_stand_alone_verifier_checks_a_receipt_offline(receipt_files):
    receipt, key, tmp = receipt_files
    path = tmp / "receipt.json"
    path.write_text(json.dumps(receipt))
    result = _verifier(path, key)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "VERIFIED" in result.stdout
    assert f"leaf {receipt['leaf_index']} is in that tree" in result.stdout


def _flip(text: str, index: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[index % len(raw)] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.django_db
def test_the_verifier_names_the_check_a_forged_receipt_fails(receipt_files):
    receipt, key, tmp = receipt_files
    proof_lines = receipt["proof"].split("\n")
    signature_line = next(line for line in proof_lines if line.startswith("\u2014"))
    _, sig = signature_line[2:].split(" ")
    cases = {
        "leaf hash is not": {
            **receipt,
            "leaf": receipt["leaf"].replace('"route":"production"', '"route":"canary"'),
        },
        # A self-consistent other leaf for the same record: only the signed promise catches it.
        "promise is for another": {
            **receipt,
            "leaf": (other := receipt["leaf"].replace('"route":"production"', '"route":"canary"')),
            "leaf_hash": v.b64(v.leaf_hash(other.encode())),
        },
        "does not lead to the root": {
            **receipt,
            "proof": receipt["proof"].replace(proof_lines[2], _flip(proof_lines[2], 0), 1),
        }
        if len(proof_lines) > 3 and proof_lines[2]
        else {**receipt, "leaf_index": receipt["leaf_index"]},
        "does not verify": {**receipt, "proof": receipt["proof"].replace(sig, _flip(sig, 10))},
        "leaf_index is not the proof's": {**receipt, "leaf_index": receipt["leaf_index"] + 1},
        "tree_size is not the proof's": {**receipt, "tree_size": receipt["tree_size"] + 1},
        "root_hash is not the proof's": {**receipt, "root_hash": _flip(receipt["root_hash"], 0)},
        "origin is not": {**receipt, "origin": "elsewhere.example/log"},
        "not a gatehouse.dev/receipt@v1": {**receipt, "format": "other"},
    }
    for expected, forged in cases.items():
        path = tmp / "forged.json"
        path.write_text(json.dumps(forged))
        result = _verifier(path, key)
        assert result.returncode == 1, (expected, result.stdout, result.stderr)
        assert "FAILED" in result.stdout
        assert expected in result.stdout, result.stdout
        assert "Traceback" not in result.stderr
    # Another log's key, a truncated file, a missing file: clear refusals, never a crash.
    other = tmp / "other-key.txt"
    other.write_text(v.SignerKey.generate(signing.origin()).verifier.text())
    path = tmp / "receipt.json"
    path.write_text(json.dumps(receipt))
    assert "not signed by a known key" in _verifier(path, other).stdout
    path.write_text(json.dumps(receipt)[:200])
    truncated = _verifier(path, key)
    assert (truncated.returncode, "Traceback" in truncated.stderr) == (2, False)
    assert _verifier(tmp / "missing.json", key).returncode == 2


@pytest.mark.django_db
def test_a_proof_for_the_wrong_tree_size_or_origin_is_refused(receipt_files):
    receipt, _, _ = receipt_files
    keys = signing.verifier_keys()
    proof = v.InclusionProof.parse(receipt["proof"])
    wrong_size = v.InclusionProof(proof.index, [*proof.path, b"\x00" * 32], proof.checkpoint).text()
    with pytest.raises(v.VerificationError, match="longer than the tree"):
        v.verify_receipt({**receipt, "proof": wrong_size}, keys)
    other = v.SignerKey.generate("other.example/log")
    foreign = other.sign_note(v.Checkpoint("other.example/log", 1, b"\x01" * 32).body())
    with pytest.raises(v.VerificationError):
        v.verify_receipt(
            {**receipt, "proof": v.InclusionProof(0, [], foreign).text()}, [*keys, other.verifier]
        )


# --- checkpoints, keys, witnesses ------------------------------------------------------------


@pytest.mark.django_db
def test_the_checkpoint_and_public_key_are_published(client, caller):
    _decisions(client, caller, n=2)
    integrate()
    text = client.get("/api/v1/log/checkpoint", **caller[1])
    assert text["Content-Type"].startswith("text/plain")
    key = v.VerifierKey.parse(
        client.get("/api/v1/log/public-key", **caller[1]).json()["public_key"]
    )
    checkpoint = v.open_checkpoint(text.content.decode(), [key])
    assert checkpoint.size == tree.integrated_size()
    assert checkpoint.origin == signing.origin() == key.name
    proof = client.get(
        "/api/v1/log/consistency", {"first": 1, "second": checkpoint.size}, **caller[1]
    ).json()
    root1 = bytes(LogLeaf.objects.get(idx=0).leaf_hash)  # the tree of one leaf
    v.verify_consistency(
        1, checkpoint.size, [_b(p) for p in proof["proof"]], root1, checkpoint.root
    )
    assert (
        client.get(
            "/api/v1/log/consistency", {"first": 1, "second": 10**9}, **caller[1]
        ).status_code
        == 422
    )
    assert client.get("/api/v1/log/checkpoint").status_code == 401


@pytest.mark.django_db
def test_old_checkpoints_keep_verifying_after_a_key_rotation(client, caller, settings):
    _decisions(client, caller, n=2)
    integrate()
    old = signing.signer()
    settings.LOG_SIGNING_KEY = v.SignerKey.generate(signing.origin()).text()
    settings.LOG_PREVIOUS_PUBLIC_KEYS = [old.verifier.text()]
    signing.signer.cache_clear()
    signing.verifier_keys.cache_clear()
    try:
        _decisions(client, caller, n=2)
        result = integrated_and_verified()
        assert result.ok, result
        key_ids = set(LogCheckpoint.objects.values_list("key_id", flat=True))
        assert key_ids == {old.verifier.id.hex(), signing.signer().verifier.id.hex()}
        settings.LOG_PREVIOUS_PUBLIC_KEYS = []
        signing.verifier_keys.cache_clear()
        assert "not signed by a known key" in verify_log().problem
    finally:
        signing.signer.cache_clear()
        signing.verifier_keys.cache_clear()


@pytest.mark.django_db
def test_every_checkpoint_is_exported_for_witnesses(client, caller, settings, tmp_path):
    import http.server
    import threading

    received: list[bytes] = []

    class Witness(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Witness)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.LOG_WITNESS_DIR = str(tmp_path / "witness")
    settings.LOG_WITNESS_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/checkpoints"
    settings.ALERT_WEBHOOK_SECRET = "s3cret"
    try:
        _decisions(client, caller, n=2)
        integrate()
        checkpoint = LogCheckpoint.objects.last()
        files = sorted((tmp_path / "witness").glob("*.checkpoint"))
        assert (
            files[-1].read_text()
            == checkpoint.note
            == (tmp_path / "witness" / "latest").read_text()
        )
        # A pass whose export was lost (the process died after its commit): the next export
        # writes the missed checkpoint too.
        settings.LOG_WITNESS_DIR = ""
        _decisions(client, caller, n=1)
        integrate()
        missed = LogCheckpoint.objects.last()
        settings.LOG_WITNESS_DIR = str(tmp_path / "witness")
        _decisions(client, caller, n=1)
        integrate()
        sizes = sorted(int(f.stem) for f in (tmp_path / "witness").glob("*.checkpoint"))
        assert sizes == sorted(LogCheckpoint.objects.values_list("size", flat=True))
        assert missed.size in sizes
        from gatehouse.tlog import witness

        assert witness.post_webhook(checkpoint) == 200
        body = json.loads(received[-1])
        assert (body["event"], body["size"], body["note"]) == (
            "log.checkpoint",
            checkpoint.size,
            checkpoint.note,
        )
    finally:
        server.shutdown()


# --- migration from the linear chain -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_linear_chain_becomes_the_first_leaves_of_the_tree(family, v1):
    import hashlib

    from django.db.migrations.executor import MigrationExecutor
    from django.utils import timezone

    before = [("inference", "0004_decision_policy_ref"), ("gatehouse", "0005_alert_family")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    OldDecision = old.get_model("inference", "Decision")
    ChainHead = old.get_model("inference", "ChainHead")
    migration = __import__(
        "apps.inference.migrations.0005_transparency_log", fromlist=["_legacy_content_hash"]
    )
    prev, ids = "0" * 64, []
    for seq in range(1, 6):
        salt = "ab" * 16
        d = OldDecision(
            seq=seq,
            created_at=timezone.now(),
            request_id=f"r{seq}",
            family_id=family.pk,
            version_id=v1.pk,
            version_label="1.0.0",
            artifact_sha256=v1.artifact_sha256,
            route="production",
            label="good",
            scores={"good": 0.9, "bad": 0.1},
            latency_ms=1.5,
            subject_pseudonym="p",
            inputs={"income": 1.0},
            payload_salt=salt,
        )
        d.payload_digest = migration._legacy_payload_digest(salt, d)
        d.content_hash = migration._legacy_content_hash(d)
        d.prev_hash, d.chain_hash = (
            prev,
            hashlib.sha256((prev + d.content_hash).encode()).hexdigest(),
        )
        prev = d.chain_hash
        d.save()
        ids.append(str(d.id))
    ChainHead.objects.create(pk=1, seq=5, chain_hash=prev)

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    leaves = list(LogLeaf.objects.filter(kind="decision").order_by("idx").values_list("ref", "idx"))
    assert leaves == [(ref, i) for i, ref in enumerate(ids)]
    result = integrated_and_verified()
    assert result.ok, result
    assert result.size >= 5


@pytest.mark.django_db
def test_health_reports_a_sequencer_that_falls_behind(client, caller):
    from datetime import timedelta

    from django.utils import timezone

    _decisions(client, caller, n=1)
    assert client.get("/health").json()["checks"]["decision_log"] == "ok"
    LogLeaf.objects.filter(idx=None).update(created_at=timezone.now() - timedelta(minutes=5))
    health = client.get("/health").json()
    assert (health["status"], health["checks"]["decision_log"]) == ("degraded", "degraded")
    integrate()
    assert client.get("/health").json()["checks"]["decision_log"] == "ok"


@pytest.mark.django_db(transaction=True)
def test_a_sequencer_whose_passes_keep_failing_hands_the_lease_over(settings, monkeypatch):
    import threading
    import time

    from gatehouse.tlog import sequencer as seq

    settings.LOG_LEASE_S = 0.3
    settings.LOG_MAX_MERGE_DELAY_S = 0.02
    broken = Sequencer(owner="broken")
    calls = []

    def fail(limit=None):
        calls.append(time.monotonic())
        raise RuntimeError("disk full")

    taken_over = []
    step_down = broken._step_down

    def step_down_then_stand_by_takes_over():
        step_down()
        # Long before the lease would have run out, a stand-by gets it.
        taken_over.append((len(calls), Sequencer(owner="stand-by").acquire()))

    monkeypatch.setattr(broken, "integrate", fail)
    monkeypatch.setattr(broken, "_step_down", step_down_then_stand_by_takes_over)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    broken.run(stop)
    assert taken_over[0] == (seq.MAX_FAILED_PASSES, True)
    assert all(acquired for _, acquired in taken_over)


@pytest.mark.django_db
def test_verification_reads_a_fixed_prefix_while_a_sequencer_keeps_integrating(
    client, caller, monkeypatch
):
    _decisions(client, caller, n=2)
    integrate()
    first = tree.integrated_size()
    _decisions(client, caller, n=3)
    integrate()  # as if this pass committed just after verification read the tree's size
    sizes = iter([first])
    real = tree.integrated_size
    monkeypatch.setattr(tree, "integrated_size", lambda: next(sizes, None) or real())
    result = verify_log()
    assert (result.ok, result.size, result.leaves) == (True, first, first), result


@pytest.mark.django_db
def test_the_verifier_survives_hostile_input(receipt_files):
    receipt, key, tmp = receipt_files
    hostile = {
        "huge index": {**receipt, "proof": receipt["proof"].replace("index ", "index 9" * 5000, 1)},
        "lone surrogate": {**receipt, "leaf": receipt["leaf"][:-1] + ',"x":"\ud800"}'},
        "deep nesting": {**receipt, "leaf": "[" * 100_000},
        "wrong types": {**receipt, "leaf_index": {"a": 1}},
    }
    for name, forged in hostile.items():
        path = tmp / "hostile.json"
        path.write_text(json.dumps(forged))
        result = _verifier(path, key)
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert "FAILED" in result.stdout, name
        assert "Traceback" not in result.stderr, (name, result.stderr)
    path = tmp / "nested.json"
    path.write_text("[" * 100_000)
    nested = _verifier(path, key)
    assert (nested.returncode, "Traceback" in nested.stderr) == (2, False)


def test_signed_notes_agree_with_the_go_reference():
    """golang.org/x/mod/sumdb/note's documented example key and signed note, byte for byte."""
    signer = v.SignerKey.parse(
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
    )
    verifier = v.VerifierKey.parse(
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    )
    body = (
        "If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n"
    )
    note = (
        body + "\n\u2014 PeterNeumann "
        "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
    )
    assert signer.verifier == verifier
    assert signer.sign_note(body) == note
    assert v.open_note(note, [verifier]) == (body, verifier)


@pytest.mark.django_db
def test_a_record_edited_after_it_was_logged_gets_no_receipt(client, caller):
    (a, b) = _decisions(client, caller, n=2)
    Decision.objects.filter(pk=a.pk).update(route="canary")
    refused = _receipt(client, caller[1], a.pk)
    assert (refused.status_code, refused.json()["code"]) == (409, "log_mismatch")
    Decision.objects.filter(pk=b.pk).update(label="good" if b.label == "bad" else "bad")
    assert _receipt(client, caller[1], b.pk).status_code == 409


@pytest.mark.django_db
def test_a_removal_mark_does_not_launder_a_deleted_approval(client, caller):
    from auditlog.models import LogEntry

    integrate()
    approval = LogEntry.objects.filter(content_type__model="versiontransition").first()
    LogEntry.objects.filter(pk=approval.pk).delete()
    tree.mark_removed("audit", [str(approval.pk)], reason="erased")
    result = verify_log()
    assert (result.ok, result.first_bad) == (False, f"audit entry {approval.pk}")
    assert "an audit entry of registry.versiontransition was removed" in result.problem
    # Nor does rewriting the kept leaf: it is bound by its hash, which the tree covers.
    forged = LogLeaf.objects.get(kind="audit", ref=str(approval.pk))
    LogLeaf.objects.filter(pk=forged.pk).update(leaf=b'{"model":"compliance.consent"}')
    assert "the logged leaf of" in verify_log().problem


@pytest.mark.django_db
def test_a_decision_purged_before_its_retention_ended_is_named(client, caller):
    (decision,) = _decisions(client, caller, n=1)
    integrate()
    Decision.objects.filter(pk=decision.pk).delete()
    tree.mark_removed("decision", [str(decision.pk)], reason="purged")
    result = verify_log()
    assert (result.ok, result.first_bad) == (False, f"decision {decision.pk}")
    assert "before its family's retention ended" in result.problem
