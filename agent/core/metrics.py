"""cellard's Prometheus endpoint (``[metrics] listen``) and the interceptor that counts RPCs.

Off by default: an HTTP listener is one more open port, and the metrics name every cell. When on,
``GET /metrics`` on ``listen`` (plain HTTP; bind it to loopback or a management network) serves

* per-cell and per-executable families from :class:`cells.metrics.CellCollector`, fetched from the
  supervisor at scrape time (``list(stats=True)``, at most once a second, 2 s at most per fetch);
* RPC counts and latencies under go-grpc-prometheus's names (``grpc_server_started_total``,
  ``grpc_server_handled_total{grpc_code}``, ``grpc_server_handling_seconds``) so existing dashboards
  work, plus a ``listener`` label: ``main`` (the admin socket and TCP) or ``local`` (the node-local
  endpoint, i.e. calls from workloads); methods that exist in no registered proto are labelled
  ``unknown`` (label cardinality stays bounded whatever a client sends);
* the counters of :mod:`agent.core.counters` (reporter, worker saver, queue, Scaleout combiner);
* ``cellar_build_info{version,python} 1`` and cellard's own ``process_*`` metrics.

Only ``GET /metrics`` serves them (any other path: 404). ``GET /healthz`` answers 200 ``SERVING``
while cellard's overall gRPC health (service ``""``) is SERVING, else 503 with the status's name
(``NOT_SERVING`` once it drains after SIGTERM, ``STARTING`` before its server is up): a load
balancer's or a supervisor's liveness probe without a gRPC client.

The HTTP server is prometheus_client's threaded WSGI server: scrapes never run on the event loop;
the runtime call is handed to the loop with ``run_coroutine_threadsafe``.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import platform
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import make_server

import grpc
import structlog
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
from prometheus_client.registry import Collector

from agent.config import parse_host_port
from agent.core import counters
from agent.version import VERSION
from cells.metrics import CellCollector

log = structlog.get_logger("agent.core.metrics")

FETCH_TIMEOUT_S = 2.0
# Latency buckets from 1 ms (a Check) to 5 min (a long Stop drain or a follow stream).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def method_labels(full_method: str) -> tuple[str, str]:
    """``("runtime.CellService", "Allocate")`` for a method some loaded proto declares, else unknown."""
    service, _, method = full_method.lstrip("/").partition("/")
    try:
        descriptor_pool.Default().FindServiceByName(service).methods_by_name[method]
    except (KeyError, TypeError):
        return "unknown", "unknown"
    return service, method


def _code_name(code: Any) -> str:
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return str(status.name)
    return "UNKNOWN"


class RpcMetrics(grpc.aio.ServerInterceptor):
    """Counts every call and times it to its end (a stream's last message); install it outermost
    so calls the authorization interceptor denies are counted too (as PERMISSION_DENIED)."""

    def __init__(self, registry: CollectorRegistry, listener: str = "main") -> None:
        self.listener = listener
        labels = ["listener", "grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter("grpc_server_started", "RPCs started on the server", labels, registry=registry)
        self.handled = Counter(
            "grpc_server_handled", "RPCs completed on the server, by status code", [*labels, "grpc_code"],
            registry=registry,
        )
        self.latency = Histogram(
            "grpc_server_handling_seconds", "time from the start of an RPC to its end", labels,
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self._labels: dict[str, tuple[str, str]] = {}

    def for_listener(self, listener: str) -> RpcMetrics:
        """The same families, labelled ``listener=listener``: the interceptor of another server."""
        other = copy.copy(self)
        other.listener = listener
        return other

    def labels(self, full_method: str) -> tuple[str, str]:
        got = self._labels.get(full_method)
        if got is None:
            got = method_labels(full_method)
            if got[0] != "unknown":  # cache only real methods: the cache stays bounded too
                self._labels[full_method] = got
        return got

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method (the authorization interceptor answers those)
            return handler  # type: ignore[return-value]
        service, method = self.labels(handler_call_details.method)
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, kind)
            if behavior is not None:
                return handler._replace(**{kind: self._wrap(behavior, kind, service, method)})  # type: ignore[attr-defined,no-any-return]
        return handler

    def _finish(self, labels: tuple[str, str, str, str], context: Any, started: float, error: BaseException | None) -> None:
        if isinstance(error, asyncio.CancelledError):
            code = "CANCELLED"
        elif error is not None and not isinstance(error, grpc.aio.AbortError):
            code = "UNKNOWN"
        else:
            set_code = context.code()
            code = "OK" if set_code is None and error is None else _code_name(set_code)
        self.handled.labels(*labels, code).inc()
        self.latency.labels(*labels).observe(time.perf_counter() - started)

    def _wrap(self, behavior: Callable[..., Any], kind: str, service: str, method: str) -> Callable[..., Any]:
        labels = (self.listener, kind, service, method)
        started_counter = self.started.labels(*labels)
        finish = self._finish
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started_counter.inc()
                started = time.perf_counter()
                error: BaseException | None = None
                try:
                    async for item in behavior(request, context):
                        yield item
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    finish(labels, context, started, error)

            return stream

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started_counter.inc()
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    result = await result
                return result
            except BaseException as exc:
                error = exc
                raise
            finally:
                finish(labels, context, started, error)

        return call


class BuildInfo(Collector):
    """``cellar_build_info{version,python} 1`` (join on it to label any series with the version)."""

    def collect(self) -> list[GaugeMetricFamily]:
        info = GaugeMetricFamily("cellar_build_info", "cellar's version and the Python running it",
                                 labels=["version", "python"])
        info.add_metric([VERSION, platform.python_version()], 1)
        return [info]


class Counters(Collector):
    """The process-wide :data:`agent.core.counters.REGISTRY`, served by this endpoint's registry."""

    def collect(self) -> Any:
        return counters.REGISTRY.collect()


def metrics_app(registry: CollectorRegistry, health: Callable[[], int | None]) -> Callable[..., Any]:
    """The WSGI app: ``/metrics`` (prometheus_client's), ``/healthz`` from ``health()`` (None: not up yet)."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        headers = [("Content-Type", "text/plain; charset=utf-8")]
        if path == "/healthz":
            status = health()
            name = "STARTING" if status is None else health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            code = "200 OK" if status == health_pb2.HealthCheckResponse.SERVING else "503 Service Unavailable"
            start_response(code, headers)
            return [name.encode() + b"\n"]
        start_response("404 Not Found", headers)
        return [b"not found: cellard serves /metrics and /healthz\n"]

    return app


@dataclass
class MetricsEndpoint:
    """The running HTTP listener; ``address`` is ``host:port`` as bound (port 0 -> the real one)."""

    registry: CollectorRegistry
    interceptor: RpcMetrics
    collector: CellCollector | None  # None: a process without cells (cellar-saver)
    address: str
    _httpd: Any
    _thread: Any
    #: the gRPC server's HealthServicer once it runs (:meth:`serve_health`): /healthz reads its "" status
    health: Any = None

    def serve_health(self, health: Any) -> None:
        self.health = health

    def overall_health(self) -> int | None:
        health = self.health
        return None if health is None else health.statuses.get("")

    @classmethod
    def start(cls, listen: str, runtime: Any, log_dir: str, loop: asyncio.AbstractEventLoop) -> MetricsEndpoint:
        """Listen on ``listen`` (``host:port``); raises OSError when the port cannot be bound."""
        host, port = parse_host_port(listen, "metrics.listen")

        def fetch() -> list[Any]:
            future = asyncio.run_coroutine_threadsafe(runtime.list(stats=True), loop)
            try:
                return list(future.result(FETCH_TIMEOUT_S))
            except BaseException:
                future.cancel()
                raise

        return cls._listen(host, port, CellCollector(fetch, Path(log_dir)), "metrics.listening")

    @classmethod
    def start_plain(cls, listen: str, where: str = "metrics_listen") -> MetricsEndpoint:
        """The same listener without cells (cellar-saver): counters, RPCs, build info, process."""
        host, port = parse_host_port(listen, where)
        return cls._listen(host, port, None, "saver.metrics_listening")

    @classmethod
    def _listen(cls, host: str, port: int, collector: CellCollector | None, event: str) -> MetricsEndpoint:
        disable_created_metrics()  # no *_created series: noise for a scraper that tracks resets itself
        registry = CollectorRegistry(auto_describe=False)
        if collector is not None:
            registry.register(collector)
        registry.register(BuildInfo())
        registry.register(Counters())
        ProcessCollector(registry=registry)
        interceptor = RpcMetrics(registry)
        holder: list[MetricsEndpoint] = []
        app = metrics_app(registry, lambda: holder[0].overall_health() if holder else None)

        class Server(ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        httpd = make_server(host, port, app, Server, handler_class=_SilentHandler)
        thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
        thread.start()
        bound = httpd.server_address[1]
        address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        log.info(event, address=address, path="/metrics")
        endpoint = cls(registry, interceptor, collector, address, httpd, thread)
        holder.append(endpoint)
        return endpoint

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
        if self.collector is not None and self.collector.logs is not None:
            self.collector.logs.close()


def start_metrics(cfg: Any, runtime: Any) -> MetricsEndpoint | None:
    """The endpoint of ``cfg.metrics.listen`` (None when off); a port it cannot bind stops cellard."""
    if not cfg.metrics.listen:
        return None
    from agent.core.server import StartupError

    try:
        return MetricsEndpoint.start(cfg.metrics.listen, runtime, cfg.paths.log_dir, asyncio.get_running_loop())
    except OSError as exc:
        raise StartupError(f"metrics.listen {cfg.metrics.listen}: {exc.strerror or exc}") from None
