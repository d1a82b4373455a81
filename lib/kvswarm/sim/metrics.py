"""The simulator's Prometheus metrics, written with prometheus-client.

`EngineMetrics` uses vLLM's metric names, types, labels (`model_name`, `engine`) and
histogram buckets for what the simulator models, so a scraper that reads vLLM reads the
simulator unchanged. `SimMetrics` holds what only the simulator has (`kvswarm_sim_*`):
injected faults, requests by outcome, its own send lateness, and KV transfers in PD mode.

Per-token histograms (inter-token latency, send lateness) are `FastHistogram`s: a list of
bucket counts updated without locks or label lookups, exposed through a collector.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from kvswarm.sim.faults import ALL_FAULT_KINDS

# vLLM's buckets (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
LATENESS_BUCKETS = (
    0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
TRANSFER_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def token_buckets(max_value: int) -> tuple[float, ...]:
    """vLLM's 1-2-5 series up to `max_value`, for token-count histograms."""
    buckets: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return tuple(buckets)
            buckets.append(float(value))
        exponent += 1


class FastHistogram:
    """A histogram for per-token observations: no lock, no labels, one list update."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float:
        """The upper bound of the bucket holding quantile `q` (inf past the last bound)."""
        target = q * self.count
        seen = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            seen += count
            if seen >= target and seen:
                return bound
        return 0.0


class _FastHistogramCollector(Collector):
    def __init__(
        self,
        name: str,
        documentation: str,
        histogram: FastHistogram,
        labels: dict[str, str],
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._histogram = histogram
        self._labels = labels

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=list(self._labels))
        cumulative = 0
        buckets = []
        histogram = self._histogram
        for bound, count in zip((*histogram.bounds, float("inf")), histogram.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        family.add_metric(list(self._labels.values()), buckets, histogram.sum)
        yield family


def register_fast_histogram(
    registry: CollectorRegistry,
    name: str,
    documentation: str,
    bounds: Sequence[float],
    labels: dict[str, str] | None = None,
) -> FastHistogram:
    histogram = FastHistogram(bounds)
    registry.register(_FastHistogramCollector(name, documentation, histogram, labels or {}))
    return histogram


class EngineMetrics:
    """vLLM's metrics for one simulated engine, in its own registry."""

    def __init__(
        self,
        registry: CollectorRegistry,
        model_name: str,
        max_model_len: int,
        block_size: int,
        cache_blocks: int,
    ) -> None:
        labels = {"model_name": model_name, "engine": "0"}
        names = list(labels)
        values = list(labels.values())

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, names, registry=registry).labels(*values)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, names, registry=registry).labels(*values)

        def histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(name, doc, names, buckets=buckets, registry=registry).labels(*values)

        self.num_requests_running = gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches."
        )
        self.num_requests_waiting = gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed."
        )
        self.kv_cache_usage_perc = gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."
        )
        self.prefix_cache_queries = counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
        )
        self.prefix_cache_hits = counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."
        )
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter(
            "vllm:generation_tokens", "Number of generation tokens processed."
        )
        self._request_success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*names, "finished_reason"],
            registry=registry,
        )
        self.request_success = {
            reason: self._request_success.labels(*values, reason)
            for reason in ("stop", "length", "abort")
        }
        self.time_to_first_token = histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            TTFT_BUCKETS,
        )
        self.inter_token_latency = register_fast_histogram(
            registry,
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            ITL_BUCKETS,
            labels,
        )
        self.time_per_output_token = histogram(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            ITL_BUCKETS,
        )
        self.e2e_request_latency = histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.request_queue_time = histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.request_inference_time = histogram(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.request_prefill_time = histogram(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.request_decode_time = histogram(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.request_prompt_tokens = histogram(
            "vllm:request_prompt_tokens",
            "Number of prefill tokens processed.",
            token_buckets(max_model_len),
        )
        self.request_generation_tokens = histogram(
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            token_buckets(max_model_len),
        )
        Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            ["block_size", "num_gpu_blocks", "enable_prefix_caching"],
            registry=registry,
        ).labels(str(block_size), str(cache_blocks), "True").set(1)


class SimMetrics:
    """The simulator's own metrics (`kvswarm_sim_*`), served at the stack's entry point."""

    def __init__(self, registry: CollectorRegistry, mode: str, model_name: str, store: str):
        Gauge(
            "kvswarm_sim_info",
            "Always 1: this endpoint is kvswarm's simulated serving stack, not a real server.",
            ["mode", "model_name", "kv_store"],
            registry=registry,
        ).labels(mode, model_name, store).set(1)
        faults = Counter(
            "kvswarm_sim_faults_injected",
            "Faults injected, by kind.",
            ["kind"],
            registry=registry,
        )
        self.faults_injected = {kind: faults.labels(kind) for kind in ALL_FAULT_KINDS}
        self._requests = Counter(
            "kvswarm_sim_requests",
            "Requests answered, by endpoint and outcome "
            "(ok, fault, client_disconnect, bad_request).",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.send_lateness = register_fast_histogram(
            registry,
            "kvswarm_sim_send_lateness_seconds",
            "Seconds between a chunk's scheduled send time and the return of its socket write.",
            LATENESS_BUCKETS,
        )
        self.kv_transfer_seconds = Histogram(
            "kvswarm_sim_kv_transfer_seconds",
            "Modelled KV transfer time per request (PD mode).",
            buckets=TRANSFER_BUCKETS,
            registry=registry,
        )
        self.kv_transfer_bytes = Counter(
            "kvswarm_sim_kv_transfer_bytes",
            "Modelled KV bytes moved from prefiller to decoder (PD mode).",
            registry=registry,
        )
        store_ops = Counter(
            "kvswarm_sim_kv_store_operations",
            "KV store operations by the simulated prefiller and decoder, by operation and result.",
            ["op", "result"],
            registry=registry,
        )
        self.kv_store_ops = {
            (op, result): store_ops.labels(op, result)
            for op in ("put", "get")
            for result in ("ok", "miss", "error", "skipped")
        }

    def request(self, endpoint: str, outcome: str) -> None:
        self._requests.labels(endpoint, outcome).inc()
