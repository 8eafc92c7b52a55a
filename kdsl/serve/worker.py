"""The model worker: one thread owns the predictor (the models are not thread-safe) and serves a queue of jobs.

Requests that arrive while the model is busy wait in the queue; the worker then takes them together, up to
`max_batch` samples, so the feature build, the rule engine and the arbiter run once per batch. A sample sent by
two requests at once is scored once (sample ids are content digests). If a combined batch fails, each request is
retried alone, so one bad request cannot fail its neighbours. A request that timed out before its turn is
skipped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from kdsl.agents.arbiter import Decision
from kdsl.agents.predictor import Predictor
from kdsl.data.sample import Sample
from kdsl.serve.errors import ApiError
from kdsl.serve.metrics import Metrics

logger = logging.getLogger(__name__)


@dataclass
class Job:
    samples: list[Sample]
    future: Future = field(default_factory=Future)
    cleanup: Callable[[], None] | None = None


class ModelWorker:
    """Runs `predictor.predict` on one thread for jobs submitted from any thread or event loop."""

    def __init__(self, predictor: Predictor, metrics: Metrics, *, max_batch: int = 4, max_queued: int = 256):
        self.predictor = predictor
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_queued = max_queued
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._queued = 0
        self._count_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopping = False

    @property
    def queued(self) -> int:
        """Samples waiting for or in the model."""
        return self._queued

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="kdsl-model", daemon=True)
                self._thread.start()

    def submit(self, samples: list[Sample], cleanup: Callable[[], None] | None = None) -> Future:
        """Queue the samples; the future resolves to their decisions (same order). ApiError 503 when full."""
        self.start()
        with self._count_lock:
            if self._stopping:
                raise ApiError(503, "overloaded", "the server is shutting down")
            if self._queued and self._queued + len(samples) > self.max_queued:
                raise ApiError(503, "overloaded", f"{self._queued} samples are waiting for the model; retry later",
                               headers={"Retry-After": "5"})
            self._queued += len(samples)
            self.metrics.queued(self._queued)
        job = Job(samples=samples, cleanup=cleanup)
        self._queue.put(job)
        return job.future

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in progress, cancel what waits, end the thread."""
        with self._count_lock:
            self._stopping = True
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.future.cancel()
                self._done([job])

    # --- the thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        carry: Job | None = None
        while True:
            job = carry or self._queue.get()
            carry = None
            if job is None:
                return
            batch, n, stop = [job], len(job.samples), False
            while n < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if n + len(nxt.samples) > self.max_batch:
                    carry = nxt
                    break
                batch.append(nxt)
                n += len(nxt.samples)
            self._process(batch)
            if stop:
                return

    def _process(self, jobs: list[Job]) -> None:
        live = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        outcomes: list[tuple[Job, list[Decision] | None, BaseException | None]] = []
        try:
            if live:
                try:
                    results = self._predict([s for j in live for s in j.samples])
                except Exception as e:  # noqa: BLE001 - every failure goes back to its request
                    if len(live) == 1:
                        outcomes.append((live[0], None, e))
                    else:
                        for j in live:
                            try:
                                outcomes.append((j, self._predict(j.samples), None))
                            except Exception as ej:  # noqa: BLE001
                                outcomes.append((j, None, ej))
                else:
                    i = 0
                    for j in live:
                        outcomes.append((j, results[i:i + len(j.samples)], None))
                        i += len(j.samples)
        finally:
            self._done(jobs)  # temporary files go before anyone hears back
            answered = {id(j) for j, _, _ in outcomes}
            for j, result, error in outcomes:
                if error is not None:
                    j.future.set_exception(error)
                else:
                    j.future.set_result(result)
            for j in live:
                if id(j) not in answered:  # only on an error that is not an Exception (e.g. KeyboardInterrupt)
                    j.future.set_exception(RuntimeError("the model worker stopped"))

    def _predict(self, samples: list[Sample]) -> list[Decision]:
        unique = list({s.id: s for s in samples}.values())
        start = time.perf_counter()
        decisions = self.predictor.predict(unique)
        self.metrics.batch(len(samples), time.perf_counter() - start)
        by_id = {s.id: d for s, d in zip(unique, decisions, strict=True)}
        return [by_id[s.id] for s in samples]

    def _done(self, jobs: list[Job]) -> None:
        for j in jobs:
            if j.cleanup is not None:
                try:
                    j.cleanup()
                except OSError:
                    logger.warning("could not remove a request's temporary files", exc_info=True)
        with self._count_lock:
            self._queued -= sum(len(j.samples) for j in jobs)
            self.metrics.queued(self._queued)
