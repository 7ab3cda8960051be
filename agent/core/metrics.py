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
* cellard's own ``process_*`` metrics.

The HTTP server is prometheus_client's threaded WSGI server: scrapes never run on the event loop;
the runtime call is handed to the loop with ``run_coroutine_threadsafe``.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog
from google.protobuf import descriptor_pool
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

from agent.config import parse_host_port
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


@dataclass
class MetricsEndpoint:
    """The running HTTP listener; ``address`` is ``host:port`` as bound (port 0 -> the real one)."""

    registry: CollectorRegistry
    interceptor: RpcMetrics
    collector: CellCollector
    address: str
    _httpd: Any
    _thread: Any

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

        disable_created_metrics()  # no *_created series: noise for a scraper that tracks resets itself
        registry = CollectorRegistry(auto_describe=False)
        collector = CellCollector(fetch, Path(log_dir))
        registry.register(collector)
        ProcessCollector(registry=registry)
        interceptor = RpcMetrics(registry)
        httpd, thread = start_http_server(port, host, registry=registry)
        bound = httpd.server_address[1]
        address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        log.info("metrics.listening", address=address, path="/metrics")
        return cls(registry, interceptor, collector, address, httpd, thread)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
        if self.collector.logs is not None:
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
