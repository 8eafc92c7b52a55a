"""`kdsl serve` (the HTTP API) and `kdsl predict` (the same predictions in batch, from a dataset file)."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from kdsl.cli._edge import bad_option, check_output, console, err_console, friendly_errors
from kdsl.config import Settings
from kdsl.errors import DataError, KdslError

app = typer.Typer(help="Serve a decider with its rules over HTTP, or predict a file in batch.")

DeciderOpt = Annotated[str, typer.Option("--decider", "--session", help="Decider name (see KDSL_HOME/deciders) or "
                                             "folder, or a discovery session's id (`last`: the newest session); "
                                             "--session is the same option under the name the docs use.")]
PolicyOpt = Annotated[str, typer.Option(help="Arbiter policy: stacked, rules_first or decider_first (without "
                                             "the decider's collaboration.json, stacked falls back to decider_first).")]
RulesOpt = Annotated[Path | None, typer.Option(help="Rules JSON file instead of the rules `kdsl eval` kept with the "
                                                    "decider.")]
ThreadsOpt = Annotated[int | None, typer.Option(min=1, help="CPU threads of a local model backend (1 is often "
                                                              "fastest on a machine busy with other work).")]
BackendOpt = Annotated[str | None, typer.Option(help="Run the decider on another backend: BACKEND:MODEL (e.g. "
                                                     "openai:http://127.0.0.1:8001/v1#NAME) or BACKEND alone for the "
                                                     "card's base model (e.g. vllm).")]


def _load(decider: str, policy: str, rules: Path | None, backend: str | None, threads: int | None,
          settings: Settings):
    from kdsl.agents.predictor import Predictor

    options = {"threads": threads} if threads is not None else {}
    return Predictor.load(decider, settings, policy=policy, backend=backend, rules=rules, **options)


@app.command("serve")
@friendly_errors
def serve(
    decider: DeciderOpt,
    policy: PolicyOpt = "stacked",
    rules: RulesOpt = None,
    backend: BackendOpt = None,
    threads: ThreadsOpt = None,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 exposes it to the network).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port (1-65535).")] = 8000,
    request_timeout: Annotated[float | None, typer.Option(help="Seconds a request may take (default 120, or "
                                                                "KDSL_SERVE_REQUEST_SECONDS).")] = None,
    max_samples: Annotated[int | None, typer.Option(help="Samples per request (default 64).")] = None,
    read_timeout: Annotated[float | None, typer.Option(help="Seconds a client may take to send a whole request "
                                                             "(default 30, or KDSL_SERVE_READ_SECONDS); then 408 and "
                                                             "the connection closes.")] = None,
    max_connections: Annotated[int | None, typer.Option(help="Open connections at most (default 1000, or "
                                                              "KDSL_SERVE_MAX_CONNECTIONS); beyond, the oldest idle "
                                                              "or unfinished one is closed.")] = None,
    warmup: Annotated[bool, typer.Option(help="Score one sample before listening (the first call is slow).")]
    = True,
) -> None:
    """Serve the decider and its rules: POST /v1/predict, GET /v1/rules, /healthz, /metrics, docs at /docs.

    Limits come from KDSL_SERVE_* variables (KDSL_SERVE_MAX_BODY_BYTES, KDSL_SERVE_MAX_IMAGES, ...).
    Example: kdsl serve --decider my-decider --port 8000
    """
    import uvicorn

    from kdsl.serve import ServeLimits, create_app
    from kdsl.serve.guard import server_config

    overrides = {k: v for k, v in {"request_seconds": request_timeout, "max_samples": max_samples,
                                   "read_seconds": read_timeout, "max_connections": max_connections}.items()
                 if v is not None}
    try:
        limits = ServeLimits(**overrides)
    except ValidationError as e:
        raise bad_option(e, {"request_seconds": "--request-timeout", "read_seconds": "--read-timeout"}) from None
    settings = Settings()
    console.print("loading the decider ...")
    predictor = _load(decider, policy, rules, backend, threads, settings)
    info = predictor.info
    if warmup:
        console.print(f"warm-up: {predictor.warmup():.1f} s", highlight=False)
    console.print(f"serving [bold]{info.decider}[/bold] ({info.backend}, policy {info.policy}, {info.rules} rules "
                  f"from {info.rules_source}) on http://{host}:{port} (docs: /docs)", highlight=False)
    try:
        server = uvicorn.Server(server_config(create_app(predictor, limits), limits, host=host, port=port))
        try:
            server.run()
        except SystemExit:  # uvicorn exits when it cannot bind (port in use, no permission)
            if server.started:
                raise
        if not server.started:
            raise KdslError(f"could not serve on {host}:{port} (the reason is in the log above)")
    finally:
        predictor.close()


def _in_part(samples: list, folder: Path | None, part: str) -> list:
    from kdsl.data import Split

    path = (folder or Path(".")) / "split.json"
    if part not in ("search", "test") or not path.is_file():
        raise typer.BadParameter(f"--part {part}: needs search or test and the decider's split.json ({path})")
    ids = set(Split.load(path).ids(part))  # type: ignore[arg-type]
    return [s for s in samples if s.id in ids]


def _print_decision(sample, d) -> None:
    """One decision as a person reads it: what was asked, the answer, who decided, and why."""
    text = " / ".join(t.text for t in sample.turns if t.role == "user" and t.text)[:120] or "(image only)"
    gold = f"  (gold {sample.label})" if sample.label is not None else ""
    console.print(f"[bold]{sample.id}[/bold] {sample.task}: {text}", highlight=False)
    console.print(f"  -> {d.label}  [{d.source}, confidence {d.confidence:.2f}]{gold}", highlight=False)
    for r in d.fired_rules[:3]:
        console.print(f"     rule {r.id}: {r.condition} -> {r.label} (estimated precision {r.precision:.2f} on "
                      f"{r.support})", highlight=False)
    top = ", ".join(f"{lab} {p:.2f}" for lab, p in d.decider_top)
    console.print(f"     decider: {top}", highlight=False)


@app.command("predict")
@friendly_errors
def predict(
    decider: DeciderOpt,
    in_: Annotated[Path, typer.Option("--in", help="Dataset file or folder any kdsl loader reads: MDSIRC json, "
                                                   "JSONL, CSV, CLINC150, Banking77.")],
    out: Annotated[Path, typer.Option(help="JSONL file: one decision per sample, with its explanation.")],
    policy: PolicyOpt = "stacked",
    rules: RulesOpt = None,
    backend: BackendOpt = None,
    threads: ThreadsOpt = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Samples per model call.")] = 16,
    skip_invalid: Annotated[bool, typer.Option(help="Skip unreadable items and samples of tasks the decider does "
                                                    "not serve, and count them, instead of stopping.")] = False,
    part: Annotated[str | None, typer.Option(help="Only the samples of this part (search or test) of the split the "
                                                  "decider or session was trained on: `test` is its sealed test.")]
    = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N samples.")] = None,
    show: Annotated[int, typer.Option(min=0, help="Print the first N decisions, explained, on the console.")] = 0,
) -> None:
    """Predict every sample of a file with the decider and its rules; write explained decisions as JSONL.

    Example: kdsl predict --decider my-decider --in new-dialogues.jsonl --out decisions.jsonl
    """
    from kdsl.cli.train_cmd import progress_bar
    from kdsl.data import load_dataset
    from kdsl.serve.schemas import DecisionOut
    from kdsl.tools.pipeline import default_builder

    check_output(out)
    settings = Settings()
    dataset = load_dataset(in_, skip_invalid=skip_invalid)
    console.print("loading the decider ...")
    predictor = _load(decider, policy, rules, backend, threads, settings)
    chosen = list(dataset.samples)
    if part is not None:
        chosen = _in_part(chosen, predictor.folder, part)
    if limit is not None:
        chosen = chosen[:limit]
    samples, skipped = [], Counter(f"{s.code}" for s in dataset.skipped)
    for i, sample in enumerate(chosen):
        try:
            predictor.check(sample)
        except DataError as e:
            if not skip_invalid:
                raise DataError(f"item {i}: {e.reason} (--skip-invalid skips such samples)", path=str(in_),
                                sample_id=sample.id, code=e.code) from None
            skipped[e.code] += 1
            continue
        samples.append((i, sample))
    if any(s.images for _, s in samples) and predictor.images:
        # Image features first, with the builder's own bar; predict then reads them from the cache.
        default_builder(settings, images=True, progress=True).build([s for _, s in samples])
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    rules_by_id = {r.id: r for r in predictor.rules.rules}
    sources: Counter[str] = Counter()
    shown: list = []
    correct = labeled = 0
    start = time.perf_counter()
    try:
        with tmp.open("w", encoding="utf-8") as f, progress_bar() as bar:
            job = bar.add_task("predicting", total=len(samples), info="")
            for b in range(0, len(samples), batch_size):
                chunk = samples[b:b + batch_size]
                try:
                    decisions = predictor.predict([s for _, s in chunk], progress=lambda n: bar.update(job, advance=n))
                except KdslError as e:
                    raise KdslError(f"{in_}: items {chunk[0][0]}..{chunk[-1][0]} (samples {chunk[0][1].id!r}.."
                                    f"{chunk[-1][1].id!r}): {e}") from e
                for (i, s), d in zip(chunk, decisions, strict=True):
                    row = DecisionOut.of(d, i, s.id, rules_by_id, gold=s.label)
                    f.write(json.dumps(row.model_dump(mode="json"), ensure_ascii=False) + "\n")
                    if len(shown) < show:
                        shown.append((s, d))
                    sources[row.source] += 1
                    if s.label is not None:
                        labeled += 1
                        correct += row.label == s.label
                bar.update(job, info=", ".join(f"{k} {v}" for k, v in sorted(sources.items())))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        predictor.close()
    seconds = time.perf_counter() - start
    for s, d in shown:
        _print_decision(s, d)
    console.print(f"{len(samples)} decisions -> {out} in {seconds:.1f} s "
                  f"({', '.join(f'{k} {v}' for k, v in sorted(sources.items())) or 'none'})", highlight=False)
    if labeled:
        console.print(f"accuracy against the file's labels: {correct / labeled:.4f} ({correct}/{labeled})",
                      highlight=False)
    if skipped:
        err_console.print(f"[yellow]skipped:[/yellow] {', '.join(f'{k} {v}' for k, v in sorted(skipped.items()))}",
                          highlight=False)
