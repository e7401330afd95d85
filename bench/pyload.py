"""Fallback load generator of `make bench` when wrk is not installed: N processes, each with one
keep-alive ``http.client`` connection posting the same body back to back (one Python process
tops out near 500 req/s, hence processes, not threads).

Each request carries its own X-Request-ID ("<prefix><process>.<8 digits>"); the ids of 2xx
answers are written out so that decision records can be matched to them. Every process stops
at the deadline after its in-flight request is answered, so no request is left in flight.

    python bench/pyload.py URL --auth "Bearer ..." --body body.json --prefix r1c.
        --seconds 15 --connections 16 --out result.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import time
from typing import Any
from urllib.parse import urlsplit


def _worker(
    index: int,
    url: str,
    auth: str,
    body: bytes,
    prefix: str,
    start_at: float,
    seconds: float,
    queue: mp.Queue[dict[str, Any]],
) -> None:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=10)
    latencies: list[float] = []
    ok_ids: list[str] = []
    statuses: dict[str, int] = {}
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    sent = 0
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = start_at + seconds
    while time.time() < deadline:
        sent += 1
        request_id = f"{prefix}{index}.{sent:08d}"
        headers = {
            "Content-Type": "application/json",
            "Authorization": auth,
            "X-Request-ID": request_id,
        }
        began = time.perf_counter()
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
        except TimeoutError:
            errors["timeout"] += 1
            conn.close()
            continue
        except (OSError, http.client.HTTPException):
            errors["read"] += 1
            conn.close()
            continue
        latencies.append(time.perf_counter() - began)
        code = str(response.status)
        statuses[code] = statuses.get(code, 0) + 1
        if 200 <= response.status < 300:
            ok_ids.append(response.getheader("X-Request-ID") or request_id)
        elif response.status >= 400:
            errors["status"] += 1
    conn.close()
    queue.put(
        {
            "latencies": latencies,
            "ok_ids": ok_ids,
            "statuses": statuses,
            "errors": errors,
            "sent": sent,
        }
    )


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--auth", required=True)
    parser.add_argument("--body", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.body, "rb") as f:
        body = f.read()
    ctx = mp.get_context("fork")
    queue: mp.Queue[dict[str, Any]] = ctx.Queue()
    start_at = time.time() + 0.5
    workers = [
        ctx.Process(
            target=_worker,
            args=(i + 1, args.url, args.auth, body, args.prefix, start_at, args.seconds, queue),
            daemon=True,
        )
        for i in range(args.connections)
    ]
    for w in workers:
        w.start()
    parts = [queue.get(timeout=args.seconds + 60) for _ in workers]
    finished = time.time()
    for w in workers:
        w.join(5)
    latencies = [x for p in parts for x in p["latencies"]]
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    for p in parts:
        for k, v in p["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
        for k, v in p["errors"].items():
            errors[k] = errors.get(k, 0) + v
    ok_ids = [x for p in parts for x in p["ok_ids"]]
    out = {
        "requests": len(latencies),
        "ok": len(ok_ids),
        "sent": sum(p["sent"] for p in parts),
        "duration_s": finished - start_at,
        "p50_ms": 1000 * _percentile(latencies, 50),
        "p90_ms": 1000 * _percentile(latencies, 90),
        "p99_ms": 1000 * _percentile(latencies, 99),
        "statuses": statuses,
        "errors": errors,
        "ids": ok_ids,
    }
    with open(args.out, "w") as f:
        json.dump(out, f)
    print(
        f"{out['requests']} requests in {out['duration_s']:.2f} s: "
        f"{out['requests'] / out['duration_s']:.1f} req/s, p50 {out['p50_ms']:.1f} ms, "
        f"p99 {out['p99_ms']:.1f} ms, statuses {statuses}"
    )


if __name__ == "__main__":
    main()
