"""Serving throughput and latency: `kdsl serve` (real uvicorn, loopback) against calling `Predictor.predict` directly.

Two workloads over MDSIRC dialogue-intent dialogues (text only):
- model: every request is a dialogue not seen before, so the decider scores it (what a user waits for);
- cached: the same dialogue again and again, so the decider's scores come from its cache and what is left is the
  server itself plus features, rules and arbiter (the server's overhead, undiluted by the model).
Each runs at 1, 4 and 16 concurrent clients (httpx, one connection each); the direct baseline is sequential.

Without --decider it builds a zero-shot SmolLM2 decider (a few labels, short prompt: the CPU is small) with the
example dialogue-intent rules. --backend runs the decider on another backend, e.g. an OpenAI-compatible server:
`--backend openai:http://127.0.0.1:8001/v1#smollm2` (start it first: `vllm serve ...`).

    python benchmarks/serving.py --model-requests 8 --cached-requests 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from kdsl.agents.decider import DeciderCard
from kdsl.agents.decider_prompt import PromptConfig
from kdsl.agents.predictor import Predictor
from kdsl.config import Settings
from kdsl.data import Sample, load_dataset

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "www2025-mdsirc"
RULES = REPO / "examples" / "rules" / "mdsirc_dialogue_intent.json"
TASK = "dialogue_intent"
LABELS = ("适用季节", "气泡", "何时上货", "商品材质")


def text_only(s: Sample) -> Sample:
    return s.model_copy(update={"images": (), "candidates": (),
                                "turns": tuple(t for t in s.turns if t.image is None and t.text.strip())})


def body(s: Sample) -> dict:
    return {"id": s.id, "task": s.task, "turns": [{"role": t.role, "text": t.text} for t in s.turns]}


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def summary(latencies: list[float], seconds: float) -> dict:
    return {"requests": len(latencies), "rps": len(latencies) / seconds, "p50_ms": 1000 * percentile(latencies, 0.5),
            "p95_ms": 1000 * percentile(latencies, 0.95), "mean_ms": 1000 * statistics.fmean(latencies)}


def zero_shot_decider(folder: Path) -> Path:
    DeciderCard(name="bench-smollm2-zero-shot", base_model="smollm2-135m-instruct", adapter=None, tasks=(TASK,),
                label_spaces={TASK: LABELS}, prompt=PromptConfig(user_chars=80, agent_chars=0),
                label_suffix="<|im_end|>").save(folder)
    return folder


def direct(predictor: Predictor, samples: list[Sample]) -> dict:
    latencies = []
    start = time.perf_counter()
    for s in samples:
        t = time.perf_counter()
        predictor.predict([s])
        latencies.append(time.perf_counter() - t)
    return summary(latencies, time.perf_counter() - start)


async def load(url: str, bodies: list[dict], concurrency: int) -> dict:
    """Send `bodies` with `concurrency` clients, each request on the next free client."""
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits, trust_env=False) as client:

        async def one_client() -> None:
            nonlocal errors
            while not queue.empty():
                b = queue.get_nowait()
                t = time.perf_counter()
                r = await client.post("/v1/predict", json=b)
                latencies.append(time.perf_counter() - t)
                errors += r.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return {**summary(latencies, seconds), "errors": errors}


def batch_stats(url: str) -> tuple[float, float]:
    """(model batches, samples in them) so far, from /metrics."""
    text = httpx.get(f"{url}/metrics", trust_env=False).text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line.startswith("kdsl_model_batch_samples_")}
    return values.get("kdsl_model_batch_samples_count", 0.0), values.get("kdsl_model_batch_samples_sum", 0.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(decider: str, port: int, backend: str | None, threads: int | None, rules: Path | None,
                 log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from kdsl.cli.main import main; main()", "serve", "--decider", decider,
           "--port", str(port)]
    if backend:
        cmd += ["--backend", backend]
    if threads:
        cmd += ["--threads", str(threads)]
    if rules:
        cmd += ["--rules", str(rules)]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2, trust_env=False).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.terminate()
    raise RuntimeError(f"the server did not answer within 600 s; see {log}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decider", help="decider name or folder (default: a zero-shot SmolLM2 one built here)")
    ap.add_argument("--backend", help="run the decider on this backend (BACKEND or BACKEND:MODEL)")
    ap.add_argument("--threads", type=int, help="CPU threads of the model (default: the backend's)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--model-requests", type=int, default=8, help="new dialogues per level (at least the level)")
    ap.add_argument("--cached-requests", type=int, default=100, help="repeated-dialogue requests per level")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    settings = Settings()
    tmp = Path(tempfile.mkdtemp(prefix="kdsl-bench-serve-"))
    decider = args.decider
    rules = None
    if decider is None:
        from kdsl.models import pull

        pull("smollm2-135m-instruct", settings, progress=False)
        decider = str(zero_shot_decider(tmp / "decider"))
        rules = RULES
    dialogues = [text_only(s) for s in load_dataset(args.data).for_task(TASK).samples]
    dialogues = [s for s in dialogues if s.turns]
    n_model = [max(args.model_requests, c) for c in args.concurrency]
    if args.model_requests + sum(n_model) + 1 > len(dialogues):
        raise SystemExit(f"only {len(dialogues)} dialogues; ask for fewer model requests")
    fresh = iter(dialogues)
    repeated = dialogues[-1]

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; decider {decider}{f' on {args.backend}' if args.backend else ''}, "
          f"threads {args.threads or 'default'}", flush=True)
    results: dict = {"direct": {}, "server": {}}
    options = {"threads": args.threads} if args.threads else {}
    predictor = Predictor.load(decider, settings, backend=args.backend, rules=rules, **options)
    print(f"direct: warm-up {predictor.warmup():.1f} s", flush=True)
    results["direct"]["model"] = direct(predictor, [next(fresh) for _ in range(args.model_requests)])
    predictor.predict([repeated])  # score it once
    results["direct"]["cached"] = direct(predictor, [repeated] * args.cached_requests)
    predictor.close()
    for k, v in results["direct"].items():
        print(f"direct {k:6s}: {v['rps']:7.2f} req/s  p50 {v['p50_ms']:8.1f} ms  p95 {v['p95_ms']:8.1f} ms", flush=True)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "server.log"
    server = start_server(decider, port, args.backend, args.threads, rules, log)
    try:
        asyncio.run(load(url, [body(repeated)], 1))  # score it once
        for c, n in zip(args.concurrency, n_model, strict=True):
            for kind, bodies in (("model", [body(next(fresh)) for _ in range(n)]),
                                 ("cached", [body(repeated)] * max(args.cached_requests, c))):
                before = batch_stats(url)
                r = asyncio.run(load(url, bodies, c))
                after = batch_stats(url)
                batches = after[0] - before[0]
                r["samples_per_model_batch"] = (after[1] - before[1]) / batches if batches else 0.0
                results["server"][f"{kind}@{c}"] = r
                print(f"server {kind:6s} c={c:2d}: {r['rps']:7.2f} req/s  p50 {r['p50_ms']:8.1f} ms  "
                      f"p95 {r['p95_ms']:8.1f} ms  ({r['requests']} requests, {r['errors']} errors, "
                      f"{r['samples_per_model_batch']:.1f} samples per model batch)", flush=True)
    finally:
        server.terminate()
        server.wait(30)
    for kind in ("model", "cached"):
        d, s = results["direct"][kind], results["server"][f"{kind}@{args.concurrency[0]}"]
        results[f"overhead_{kind}_p50_ms"] = s["p50_ms"] - d["p50_ms"]
        print(f"server overhead ({kind}, c={args.concurrency[0]}): p50 {s['p50_ms'] - d['p50_ms']:+.1f} ms "
              f"({s['p50_ms']:.1f} vs {d['p50_ms']:.1f} direct)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
