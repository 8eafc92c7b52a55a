"""Prometheus metrics of the server: requests by path and status, latency, predictions by source, model batches.

prometheus_client is used when it is installed (a private registry, so two apps in one process do not clash);
otherwise the same metrics are kept here and written in the Prometheus text exposition format (version 0.0.4).
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

# name, kind, help, label names, buckets (histograms)
_SPECS: tuple[tuple[str, str, str, tuple[str, ...], tuple[float, ...]], ...] = (
    ("kdsl_http_requests_total", "counter", "HTTP requests by method, route and status code.",
     ("method", "path", "status"), ()),
    ("kdsl_http_request_seconds", "histogram", "Time from request to response, by route.", ("path",),
     LATENCY_BUCKETS),
    ("kdsl_predictions_total", "counter", "Decisions returned, by task and winning source.", ("task", "source"), ()),
    ("kdsl_errors_total", "counter", "Error responses by code.", ("code",), ()),
    ("kdsl_model_batch_samples", "histogram", "Samples per model batch (concurrent requests share one).", (),
     BATCH_BUCKETS),
    ("kdsl_model_batch_seconds", "histogram", "Seconds of one model batch: features, decider, rules, arbiter.", (),
     LATENCY_BUCKETS),
    ("kdsl_queued_samples", "gauge", "Samples waiting for or in the model worker.", (), ()),
)


class Metrics:
    """The server's metrics. All methods are thread-safe."""

    def __init__(self, use_prometheus_client: bool | None = None):
        self._client = None
        if use_prometheus_client is not False:
            try:
                import prometheus_client  # noqa: F401
            except ImportError:
                if use_prometheus_client:
                    raise
            else:
                self._client = _ClientMetrics()
        self._own = _OwnMetrics() if self._client is None else None

    @property
    def backend(self) -> str:
        return "prometheus_client" if self._client is not None else "kdsl"

    def _sink(self) -> _ClientMetrics | _OwnMetrics:
        return self._client if self._client is not None else self._own  # type: ignore[return-value]

    def request(self, method: str, path: str, status: int, seconds: float) -> None:
        sink = self._sink()
        sink.inc("kdsl_http_requests_total", (method, path, str(status)))
        sink.observe("kdsl_http_request_seconds", (path,), seconds)

    def prediction(self, task: str, source: str) -> None:
        self._sink().inc("kdsl_predictions_total", (task, source))

    def error(self, code: str) -> None:
        self._sink().inc("kdsl_errors_total", (code,))

    def batch(self, samples: int, seconds: float) -> None:
        self._sink().observe("kdsl_model_batch_samples", (), samples)
        self._sink().observe("kdsl_model_batch_seconds", (), seconds)

    def queued(self, samples: int) -> None:
        self._sink().set("kdsl_queued_samples", (), samples)

    def render(self) -> bytes:
        return self._sink().render()


class _ClientMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics = {}
        for name, kind, help_, labels, buckets in _SPECS:
            short = name.removesuffix("_total") if kind == "counter" else name
            if kind == "counter":
                self.metrics[name] = Counter(short, help_, labels, registry=self.registry)
            elif kind == "histogram":
                self.metrics[name] = Histogram(name, help_, labels, buckets=buckets, registry=self.registry)
            else:
                self.metrics[name] = Gauge(name, help_, labels, registry=self.registry)

    def _get(self, name: str, labels: Sequence[str]):
        m = self.metrics[name]
        return m.labels(*labels) if labels else m

    def inc(self, name: str, labels: Sequence[str]) -> None:
        self._get(name, labels).inc()

    def observe(self, name: str, labels: Sequence[str], value: float) -> None:
        self._get(name, labels).observe(value)

    def set(self, name: str, labels: Sequence[str], value: float) -> None:
        self._get(name, labels).set(value)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _Histogram:
    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, upper in enumerate(self.buckets):
            if value <= upper:
                self.counts[i] += 1
        self.sum += value
        self.count += 1


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: tuple[str, str] | None = None) -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(f'{extra[0]}="{extra[1]}"')
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else f"{x:.1f}"


class _OwnMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._specs = {s[0]: s for s in _SPECS}
        self._values: dict[str, dict[tuple[str, ...], float]] = defaultdict(dict)
        self._hists: dict[str, dict[tuple[str, ...], _Histogram]] = defaultdict(dict)

    def inc(self, name: str, labels: Sequence[str]) -> None:
        with self._lock:
            values = self._values[name]
            values[tuple(labels)] = values.get(tuple(labels), 0.0) + 1

    def set(self, name: str, labels: Sequence[str], value: float) -> None:
        with self._lock:
            self._values[name][tuple(labels)] = float(value)

    def observe(self, name: str, labels: Sequence[str], value: float) -> None:
        with self._lock:
            hists = self._hists[name]
            key = tuple(labels)
            if key not in hists:
                hists[key] = _Histogram(self._specs[name][4])
            hists[key].observe(value)

    def render(self) -> bytes:
        lines: list[str] = []
        with self._lock:
            for name, kind, help_, names, _ in _SPECS:
                lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
                if kind == "histogram":
                    for key, h in sorted(self._hists[name].items()):
                        for upper, count in zip(h.buckets, h.counts, strict=True):
                            lines.append(f"{name}_bucket{_labels(names, key, ('le', _number(upper)))} {count}")
                        lines.append(f"{name}_bucket{_labels(names, key, ('le', '+Inf'))} {h.count}")
                        lines.append(f"{name}_sum{_labels(names, key)} {_number(h.sum)}")
                        lines.append(f"{name}_count{_labels(names, key)} {h.count}")
                else:
                    values = self._values[name] or ({(): 0.0} if not names else {})
                    for key, value in sorted(values.items()):
                        lines.append(f"{name}{_labels(names, key)} {_number(value)}")
        return ("\n".join(lines) + "\n").encode("utf-8")
