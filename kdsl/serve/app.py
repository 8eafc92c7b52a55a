"""The HTTP API: predictions with explanations, the rules behind them, health and metrics.

`create_app(predictor, limits)` returns a FastAPI app around an already loaded `Predictor` (load it once:
`Predictor.load(...)`, or `kdsl serve`). Model work runs on one worker thread, off the event loop; every error is
a JSON body with a stable code; nothing a client sends turns into a 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kdsl import __version__
from kdsl.agents.arbiter import Decision
from kdsl.agents.predictor import Predictor
from kdsl.data.sample import Sample, Turn
from kdsl.errors import DataError, FeatureError, KdslError
from kdsl.rules import normalize
from kdsl.serve.errors import HTTP_CODES, ApiError, error_body, error_bytes, validation_error
from kdsl.serve.images import decode_image, write_image
from kdsl.serve.limits import ServeLimits
from kdsl.serve.metrics import CONTENT_TYPE, Metrics
from kdsl.serve.schemas import (
    DecisionOut,
    ErrorResponse,
    Health,
    PredictRequest,
    PredictResponse,
    RuleOut,
    RulesResponse,
    SampleIn,
)
from kdsl.serve.worker import ModelWorker

logger = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in {
        400: "Not JSON.", 415: "Not sent as application/json.",
        413: "Over a limit: body, samples, turns, text, images, image bytes or pixels.",
        422: "Wrong types, unknown task or label, empty dialogue, corrupt image.",
        503: "The model failed or the queue is full.", 504: "The request took longer than the limit.",
    }.items()
}


async def _LEFT(*_: Any) -> Message:  # noqa: N802 - a sentinel: the client left while its body was being read
    return {"type": "http.disconnect"}


class _EdgeMiddleware:
    """Counts and times every request, and refuses a body over the limit before the app reads it.

    The body is read here (at most `max_body` bytes, whatever Content-Length claims) and replayed to the app.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body: int, paths: set[str]):
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.paths = paths  # the app's static route paths, for requests refused before routing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            replay = await self._read_body(scope, receive)
            if replay is _LEFT:  # the client left (or the server's read deadline closed it) mid-body: no app call
                status[0] = 408
                return
            if replay is None:
                status[0] = 413
                self.metrics.error("body_too_large")
                await _send_json(send, 413, error_bytes("body_too_large", f"the body is over {self.max_body} bytes"))
                return
            await self.app(scope, replay, send_counted)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or (scope.get("path") if scope.get("path") in self.paths else "other")
            self.metrics.request(scope.get("method", ""), path, status[0], time.perf_counter() - start)

    async def _read_body(self, scope: Scope, receive: Receive) -> Receive | None:
        """A receive that replays the body, None when the body is too large, _LEFT when the client left before
        sending all of it."""
        if scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return receive
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    if int(value) > self.max_body:
                        return None
                except ValueError:
                    pass
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return _LEFT
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, sent = b"".join(chunks), [False]

        async def replay() -> Message:
            if not sent[0]:
                sent[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _encodable(text: str) -> bool:
    """JSON may carry lone surrogates (\\ud800) that no UTF-8 text can hold; they would fail deep in the model."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _sample_id(s: SampleIn, images: list[bytes]) -> str:
    """A content digest: what the decision depends on (task, turns, images, candidates), never the client's id, so
    two requests sending the same dialogue share a score and two different ones never collide."""
    h = hashlib.sha256()
    h.update(json.dumps([s.task, [t.model_dump() for t in s.turns], s.candidates or []], ensure_ascii=False)
             .encode("utf-8"))
    for data in images:
        h.update(hashlib.sha256(data).digest())
    return "s-" + h.hexdigest()[:24]


def _to_samples(body: PredictRequest, predictor: Predictor, limits: ServeLimits, folder: Path | None) -> list[Sample]:
    """Check each sample against the limits and the decider, decode its images into `folder`. Runs off the loop."""
    if len(body.samples) > limits.max_samples:
        raise ApiError(413, "too_many_samples", f"{len(body.samples)} samples in one request; the limit is "
                                                f"{limits.max_samples}")
    samples = []
    for i, s in enumerate(body.samples):
        if s.task not in predictor.label_spaces:
            raise ApiError(422, "unknown_task", f"unknown task {s.task!r}; this decider serves "
                                                f"{', '.join(predictor.tasks)}", item=i)
        if len(s.turns) > limits.max_turns:
            raise ApiError(413, "too_many_turns", f"{len(s.turns)} turns; the limit is {limits.max_turns}", item=i)
        long = next((j for j, t in enumerate(s.turns) if len(t.text) > limits.max_text_chars), None)
        if long is not None:
            raise ApiError(413, "text_too_long", f"turn {long} has {len(s.turns[long].text)} characters; the limit "
                                                 f"is {limits.max_text_chars}", item=i)
        if len(s.images) > limits.max_images:
            raise ApiError(413, "too_many_images", f"{len(s.images)} images; the limit is {limits.max_images} "
                                                   "per sample", item=i)
        bad = next((j for j, t in enumerate(s.turns) if not _encodable(t.text)), None)
        if bad is not None or not all(_encodable(c) for c in s.candidates or ()):
            where = f"turn {bad}" if bad is not None else "a candidate label"
            raise ApiError(422, "invalid_text", f"{where} is not valid Unicode text (a lone surrogate such as "
                                                "\\ud800); send UTF-8 text", item=i)
        decoded = [decode_image(text, limits, item=i, index=k) for k, text in enumerate(s.images)]
        sample = Sample(
            id=_sample_id(s, [d for d, _ in decoded]), task=s.task,
            turns=tuple(Turn(role=t.role, text=t.text, image=t.image) for t in s.turns),
            images=tuple(write_image(d, suffix, folder) for d, suffix in decoded if folder is not None),
            candidates=tuple(s.candidates or ()),
        )
        try:
            predictor.check(sample)
        except DataError as e:
            raise ApiError(422, e.code, e.reason, item=i) from None
        samples.append(sample)
    return samples


def _failure(e: BaseException, samples: list[Sample]) -> ApiError:
    """What a failed prediction tells the client: a bad image is the client's (422), anything else 503."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, FeatureError):
        item = next((i for i, s in enumerate(samples) if s.id in str(e)), None)
        return ApiError(422, "invalid_image", "an image could not be read: " + str(e).split(": ", 1)[-1], item=item)
    if isinstance(e, DataError):
        return ApiError(422, e.code, e.reason)
    logger.error("prediction failed", exc_info=e)
    # kdsl's own errors say what went wrong in words meant for users; anything else stays in the server log.
    message = (f"the model failed: {e}" if isinstance(e, KdslError)
               else f"the model failed ({type(e).__name__}); the server log has the details")
    return ApiError(503, "model_error", message[:500], headers={"Retry-After": "5"})


def create_app(predictor: Predictor, limits: ServeLimits | None = None, *, metrics: Metrics | None = None) -> FastAPI:
    """The FastAPI app serving `predictor` (already loaded) under `limits`.

    Example:
        predictor = Predictor.load("my-decider", Settings())
        uvicorn.run(create_app(predictor, ServeLimits()), host="127.0.0.1", port=8000)
    """
    limits = limits or ServeLimits()
    metrics = metrics or Metrics()
    worker = ModelWorker(predictor, metrics, max_batch=limits.max_batch_samples, max_queued=limits.max_queued_samples)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        try:
            yield
        finally:
            await asyncio.to_thread(worker.stop)

    info = predictor.info
    app = FastAPI(
        title="kdsl", version=__version__, lifespan=lifespan,
        description=f"Dialogue intent by rules and a post-trained decider, deciding together. Serving decider "
                    f"`{info.decider}` ({info.backend}) under the `{info.policy}` policy with {info.rules} rules "
                    f"({info.rules_source}). Errors: `{{\"error\": {{\"code\", \"message\", \"item\"}}}}`.",
    )
    app.state.predictor, app.state.limits, app.state.metrics, app.state.worker = predictor, limits, metrics, worker
    paths: set[str] = set()  # filled once the routes exist; the middleware stack is built at the first request
    app.add_middleware(_EdgeMiddleware, metrics=metrics, max_body=limits.max_body_bytes,  # type: ignore[arg-type]
                       paths=paths)

    def reply(e: ApiError) -> JSONResponse:
        metrics.error(e.code)
        return JSONResponse(error_body(e.code, e.message, e.item), status_code=e.status, headers=e.headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return reply(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and content_type and "json" not in content_type:
            return reply(ApiError(415, "unsupported_media_type", f"send JSON (content-type: application/json), "
                                                                 f"not {content_type}"))
        return reply(validation_error(list(e.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(e.status_code, "http_error")
        message = e.detail if isinstance(e.detail, str) else str(e.detail)
        return reply(ApiError(e.status_code, code, f"{message}: {request.method} {request.url.path}"))

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception) -> JSONResponse:
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=e)
        return reply(ApiError(500, "internal", "an unexpected error; the server log has the details"))

    @app.post("/v1/predict", response_model=PredictResponse, responses=ERRORS, tags=["predict"])
    async def predict(body: PredictRequest) -> PredictResponse:
        """Label one sample or a batch, with the rules that fired (and their verify statistics), the decider's
        top labels and the source that won."""
        start = time.perf_counter()
        # Decoded images live in a folder of their own until the model worker is done with the request.
        folder = None
        if any(s.images for s in body.samples):
            folder = Path(tempfile.mkdtemp(prefix="kdsl-req-", dir=limits.tmp_dir))

        def cleanup() -> None:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

        try:
            samples = await asyncio.to_thread(_to_samples, body, predictor, limits, folder)
            future = worker.submit(samples, cleanup)
        except BaseException:
            cleanup()
            raise
        remaining = limits.request_seconds - (time.perf_counter() - start)
        try:
            # Cancelling on timeout cancels the job if it has not started; a started batch runs to its end.
            decisions: list[Decision] = await asyncio.wait_for(asyncio.wrap_future(future), max(remaining, 0.001))
        except TimeoutError:
            raise ApiError(504, "timeout", f"no answer within {limits.request_seconds:g} s (the model is busy or "
                                           "slow); send fewer samples or retry later") from None
        except Exception as e:  # noqa: BLE001 - mapped to a JSON error, logged when it is the server's
            raise _failure(e, samples) from None
        rules = {r.id: r for r in predictor.rules.rules}
        out = [DecisionOut.of(d, i, s.id, rules) for i, (d, s) in enumerate(zip(decisions, body.samples, strict=True))]
        for d in out:
            metrics.prediction(d.task, d.source)
        return PredictResponse(decisions=out, decider=info.decider, policy=info.policy,
                               seconds=round(time.perf_counter() - start, 4))

    @app.get("/v1/rules", response_model=RulesResponse, responses=ERRORS, tags=["rules"])
    async def rules(
        q: Annotated[str | None, Query(max_length=500, description="Text to find in the statement, condition, "
                                                                   "label or id (case- and width-insensitive).")]
        = None,
        label: Annotated[str | None, Query(max_length=200)] = None,
        task: Annotated[str | None, Query(max_length=200)] = None,
        min_precision: Annotated[float | None, Query(ge=0, le=1, description="Keep rules whose verify precision "
                                                                             "is at least this.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> RulesResponse:
        """The rules the predictor decides with, most trusted first (Wilson lower bound of verify precision)."""
        needle = normalize(q) if q else ""
        found = []
        for r in predictor.rules.rules:
            if label is not None and r.label != label or task is not None and r.task != task:
                continue
            if min_precision is not None and (r.stats is None or r.stats.precision < min_precision):
                continue
            if needle and needle not in normalize(" ".join((r.id, r.label, r.statement, r.when.render()))):
                continue
            found.append(r)
        found.sort(key=lambda r: -r.confidence)
        return RulesResponse(total=len(found), rules=[RuleOut.of(r) for r in found[offset:offset + limit]])

    @app.api_route("/healthz", methods=["GET", "HEAD"], response_model=Health, tags=["ops"])
    async def healthz() -> Health:
        """Liveness and what is served: decider, backend, policy, rules, tasks and label spaces."""
        return Health(predictor=info, label_spaces=predictor.label_spaces, queued_samples=worker.queued,
                      uptime_s=round(time.time() - started, 1))

    @app.get("/metrics", tags=["ops"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format."}})
    async def prometheus() -> Response:
        """Prometheus metrics: requests by route and status, latency, predictions by source, model batches."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    paths.update(getattr(r, "path", "") for r in app.routes)
    return app
