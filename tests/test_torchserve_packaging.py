"""A version packaged with build_mar and served by a real TorchServe answers exactly like the
in-process computation, alone, batched, and next to an invalid request."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import torch

from apps.registry import architectures, encoding
from apps.registry.packaging import build_mar
from tests.torchserve import Response, TorchServeInstance, torchserve

pytestmark = pytest.mark.slow

T = TypeVar("T")

MODEL = "credit-risk"
SIGNATURE: dict[str, Any] = {
    "features": [
        {"name": "age", "type": "int", "minimum": 18, "maximum": 100},
        {"name": "income", "type": "float", "minimum": 0},
        {"name": "housing", "type": "category", "allowed": ["own", "rent", "free"]},
    ],
    "output": {"labels": ["good", "bad", "review"]},
}
KWARGS: dict[str, Any] = {
    "n_inputs": encoding.input_width(SIGNATURE),
    "hidden": [8],
    "n_classes": 3,
}
TOLERANCE = 1e-5


def make_weights(seed: int) -> bytes:
    torch.manual_seed(seed)
    state = architectures.build("mlp", KWARGS).state_dict()
    # Non-trivial standardisation buffers, so that they are exercised too.
    state["norm.mean"] = torch.tensor([40.0, 3000.0, 0.0, 0.0, 0.0])
    state["norm.scale"] = torch.tensor([12.0, 1500.0, 1.0, 1.0, 1.0])
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def in_process(weights: bytes, rows: list[dict[str, Any]]) -> np.ndarray:
    model = architectures.build("mlp", KWARGS)
    model.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))
    model.eval()
    with torch.inference_mode():
        logits = model(torch.from_numpy(encoding.encode(SIGNATURE, rows)))
        return torch.softmax(logits, dim=1).numpy()


def make_rows(seed: int, n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "age": int(rng.integers(18, 90)),
            "income": round(float(rng.uniform(0, 9000)), 2),
            "housing": str(rng.choice(["own", "rent", "free"])),
        }
        for _ in range(n)
    ]


def assert_matches(resp: Response, weights: bytes, rows: list[dict[str, Any]]) -> None:
    assert resp.status == 200, resp.text
    body = resp.json()
    expected = in_process(weights, rows)
    got = np.array(body["probabilities"])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)
    labels = SIGNATURE["output"]["labels"]
    assert body["labels"] == [labels[i] for i in expected.argmax(axis=1)]


def run_together(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run the calls in threads released at the same instant, so TorchServe can batch them."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def batch_size(resp: Response) -> int:
    return int(resp.headers.get("x-gatehouse-batch-size", "0"))


@pytest.fixture(scope="module")
def weights() -> dict[str, bytes]:
    return {"1": make_weights(1), "2": make_weights(2)}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, weights: dict[str, bytes]
) -> Iterator[TorchServeInstance]:
    tmp = tmp_path_factory.mktemp("ts")
    store = tmp / "model_store"
    store.mkdir()
    started = time.monotonic()
    mars = {
        version: build_mar(
            model_name=MODEL,
            version=version,
            framework="torch_state_dict",
            architecture="mlp",
            architecture_kwargs=KWARGS,
            signature=SIGNATURE,
            weights=weights[version],
            export_dir=store,
        )
        for version in ("1", "2")
    }
    packaged = time.monotonic()
    with torchserve(tmp, store) as ts:
        healthy = time.monotonic()
        ts.register(mars["1"].name, batch_size=8, max_batch_delay_ms=5)
        registered = time.monotonic()
        print(
            f"\n[torchserve] build_mar x2 {packaged - started:.2f}s, "
            f"start->healthy {healthy - packaged:.2f}s, register {registered - healthy:.2f}s"
        )
        yield ts


def test_the_archive_holds_the_handler_its_modules_and_the_spec(
    server: TorchServeInstance,
) -> None:
    with zipfile.ZipFile(server.model_store / f"{MODEL}.1.mar") as z:
        names = set(z.namelist())
    assert {
        "torchserve_handler.py",
        "encoding.py",
        "architectures.py",
        "gatehouse_model.json",
        "weights.pt",
        "MAR-INF/MANIFEST.json",
    } <= names


def test_it_serves_the_in_process_probabilities(
    server: TorchServeInstance, weights: dict[str, bytes]
) -> None:
    rows = make_rows(0, 25)
    started = time.perf_counter()
    resp = server.predict(MODEL, rows)
    print(f"\n[torchserve] one request of 25 rows: {1000 * (time.perf_counter() - started):.1f} ms")
    assert_matches(resp, weights["1"], rows)
    assert resp.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("content_type", ["application/octet-stream", "text/plain"])
def test_a_body_sent_without_json_content_type_is_decoded_too(
    server: TorchServeInstance, weights: dict[str, bytes], content_type: str
) -> None:
    rows = make_rows(1, 3)
    resp = server.request(
        "POST",
        f"{server.inference_url}/predictions/{MODEL}",
        body=json.dumps({"rows": rows}).encode(),
        headers={"Content-Type": content_type},
    )
    assert_matches(resp, weights["1"], rows)


def test_concurrent_requests_are_batched_and_all_correct(
    server: TorchServeInstance, weights: dict[str, bytes]
) -> None:
    sizes: list[int] = []
    started = time.perf_counter()
    for round_ in range(3):
        batches = [make_rows(100 * round_ + i, 1 + i % 4) for i in range(16)]
        responses = run_together([partial(server.predict, MODEL, rows) for rows in batches])
        for rows, resp in zip(batches, responses, strict=True):
            assert_matches(resp, weights["1"], rows)
            sizes.append(batch_size(resp))
    elapsed = time.perf_counter() - started
    print(f"\n[torchserve] 3 x 16 concurrent requests in {elapsed:.2f}s; batch sizes {sizes}")
    assert max(sizes) > 1, "no two requests ever shared a batch"
    assert max(sizes) <= 8


def test_an_invalid_row_fails_only_its_own_request(
    server: TorchServeInstance, weights: dict[str, bytes]
) -> None:
    good = make_rows(7, 2)
    bad = [*make_rows(8, 1), {"age": 17, "income": 10.0, "housing": "castle", "extra": 1}]
    shared = 0
    for _ in range(3):
        calls = [partial(server.predict, MODEL, good), partial(server.predict, MODEL, bad)] * 4
        responses = run_together(calls)
        for i, resp in enumerate(responses):
            if i % 2 == 0:
                assert_matches(resp, weights["1"], good)
            else:
                assert resp.status == 400, resp.text
                error = resp.json()
                assert error["code"] == "invalid_rows"
                fields = {(e["row"], e["field"]) for e in error["errors"]}
                assert fields == {(1, "age"), (1, "housing"), (1, "extra")}
                shared += batch_size(resp) > 1
    print(f"\n[torchserve] invalid requests that shared a batch with others: {shared}/12")
    assert shared > 0, "the invalid request never shared a batch: isolation was not exercised"


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"rows": []}', b'{"rows": [1]}', b"[]"],
    ids=["not-json", "no-rows", "row-not-object", "not-object"],
)
def test_a_malformed_body_is_a_400(server: TorchServeInstance, body: bytes) -> None:
    resp = server.request(
        "POST",
        f"{server.inference_url}/predictions/{MODEL}",
        body=body,
        headers={"Content-Type": "application/json"} if body.startswith((b"{", b"[")) else {},
    )
    assert resp.status == 400, resp.text


def test_a_second_version_is_served_beside_the_first(
    server: TorchServeInstance, weights: dict[str, bytes]
) -> None:
    server.register(f"{MODEL}.2.mar", batch_size=8, max_batch_delay_ms=5)
    rows = make_rows(3, 5)
    assert_matches(server.predict(MODEL, rows, version="2"), weights["2"], rows)
    assert_matches(server.predict(MODEL, rows, version="1"), weights["1"], rows)
    assert_matches(server.predict(MODEL, rows), weights["1"], rows)  # the default stays 1


@pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated:DeprecationWarning")
def test_a_torchscript_version_is_served_too(
    server: TorchServeInstance, weights: dict[str, bytes]
) -> None:
    model = architectures.build("mlp", KWARGS)
    model.load_state_dict(torch.load(io.BytesIO(weights["1"]), weights_only=True))
    scripted = torch.jit.trace(model.eval(), torch.zeros(1, KWARGS["n_inputs"]))
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    mar = build_mar(
        model_name=MODEL,
        version="3-ts",
        framework="torchscript",
        architecture="",
        architecture_kwargs={},
        signature=SIGNATURE,
        weights=buffer.getvalue(),
        export_dir=server.model_store,
    )
    server.register(mar.name)
    rows = make_rows(4, 6)
    assert_matches(server.predict(MODEL, rows, version="3-ts"), weights["1"], rows)


def test_an_unknown_model_is_a_404(server: TorchServeInstance) -> None:
    assert server.predict("no-such-model", make_rows(0, 1)).status == 404
    assert server.predict(MODEL, make_rows(0, 1), version="99").status == 404


def test_build_mar_refuses_unsafe_names_and_unknown_architectures(tmp_path: Path) -> None:
    common: dict[str, Any] = {
        "version": "1",
        "framework": "torch_state_dict",
        "architecture": "mlp",
        "architecture_kwargs": KWARGS,
        "signature": SIGNATURE,
        "weights": b"",
        "export_dir": tmp_path,
    }
    with pytest.raises(ValueError, match="model name"):
        build_mar(**{**common, "model_name": "../evil"})
    with pytest.raises(ValueError, match="version"):
        build_mar(**{**common, "model_name": MODEL, "version": "1/2"})
    with pytest.raises(ValueError, match="allow-listed"):
        build_mar(**{**common, "model_name": MODEL, "architecture": "os.system"})
    assert list(tmp_path.iterdir()) == []
