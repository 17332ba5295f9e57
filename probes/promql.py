"""An instant PromQL query against a Prometheus HTTP API; each result series becomes a sample.

The query runs through `GET <url>/api/v1/query` (Prometheus, Thanos, VictoriaMetrics, Mimir:
anything that speaks the API) at the server's current time, with the probe's timeout passed
on so that the server gives up too. Each series of an instant vector becomes a sample named
`metric` with the series' labels; a scalar becomes one sample without labels. Values are
kept as Prometheus gives them, NaN and infinities included; samples are stamped with the time
of the query. A range vector (`up[5m]`) cannot be a sample and fails the query.

Labels: the series' own name (`__name__`, present when the query selects raw series) is
kept in the label `metric_name`, not `name`, which many exporters use themselves (systemd
units in node_exporter). A label named `probe` becomes `exported_probe`: forewarn's `probe`
label names the probe that queried.

An empty result gives no value sample, only `promql_series 0`: write the query so that it
always returns something when absence matters (`up{job="node"} or vector(0)`, `absent(...)`).

Options:
- `url` (required): the Prometheus base URL, e.g. `http://127.0.0.1:9090` (a path prefix is kept).
- `query` (required): the PromQL expression.
- `metric` (default `promql_value`): the name of the result samples, which rules refer to.
- `timeout` (default 10s): bounds the whole exchange; also sent as the query's own timeout.
- `verify_tls` (default true), `bearer_token` (a secret: `{ env = "..." }` or `{ file = "..." }`).

Metrics: `<metric>{<series labels>}`, and `promql_up{url}` (1 when the query succeeded; else 0
with Prometheus's `errorType: error` or the connection failure in `error`),
`promql_series{url}` (how many series the result held) and `promql_duration_seconds{url}`.

Example:

    [[probe]]
    name = "fleet_disks"
    kind = "promql"
    url = "http://127.0.0.1:9090"
    query = 'node_filesystem_avail_bytes{fstype!~"tmpfs|overlay"} / node_filesystem_size_bytes'
    metric = "fleet_filesystem_avail_ratio"
"""

import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from probes._text import first_line
from probes.base import Duration, Sample
from probes.http import check_url, new_session, redacted_url
from probes.scrape import FetchError, check_token, fetch, own_labels

log = logging.getLogger(__name__)

UP = "promql_up"
SERIES = "promql_series"
DURATION = "promql_duration_seconds"
DEFAULT_METRIC = "promql_value"
DEFAULT_TIMEOUT = Duration(10)
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


class QueryError(Exception):
    """The query failed; the message is short and fit for a ticket."""


@dataclass(frozen=True)
class Point:
    labels: dict[str, str]
    value: float


def _number(value: Any) -> float:
    """A value of the API's [timestamp, "value"] pairs; "NaN", "+Inf", "-Inf" included."""
    try:
        return float(value[1])
    except (TypeError, ValueError, IndexError):
        raise QueryError(f"not a number in the result: {first_line(repr(value))}") from None


def _series_labels(metric: dict[str, str]) -> dict[str, str]:
    labels = {k: v for k, v in metric.items() if k != "__name__"}
    if "__name__" in metric:
        labels["metric_name"] = metric["__name__"]
    return own_labels(labels)


def _vector_point(item: Any) -> Point:
    metric = item.get("metric") if isinstance(item, dict) else None
    if not isinstance(metric, dict):
        raise QueryError("a result series has no labels")
    labels = {str(k): str(v) for k, v in metric.items()}
    return Point(_series_labels(labels), _number(item.get("value")))


def points_of(data: Any) -> list[Point]:
    """The points of a successful response's `data`; QueryError for what is not a sample."""
    kind, result = data.get("resultType"), data.get("result")
    if kind == "vector" and isinstance(result, list):
        return [_vector_point(item) for item in result]
    if kind in ("scalar", "string"):
        return [Point({}, _number(result))]
    if kind == "matrix":
        raise QueryError("the query returns a range vector; use an instant vector or a scalar")
    raise QueryError(f"unexpected result type {first_line(str(kind))}")


def parse_response(status: int, body: bytes) -> list[Point]:
    """The points of an API response, or QueryError with Prometheus's own reason."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise QueryError(f"unexpected status {status}" if status != 200 else "not a JSON answer")
    if answer.get("status") != "success":
        kind, reason = answer.get("errorType", "error"), answer.get("error", f"status {status}")
        raise QueryError(first_line(f"{kind}: {reason}"))
    if not isinstance(answer.get("data"), dict):
        raise QueryError("the answer has no data")
    return points_of(answer["data"])


class PromqlProbe:
    kind: ClassVar[str] = "promql"

    @dataclass(frozen=True)
    class Options:
        """`url` is the server's base URL; `metric` names the result samples."""

        url: str
        query: str
        metric: str = DEFAULT_METRIC
        timeout: Duration = DEFAULT_TIMEOUT
        verify_tls: bool = True
        bearer_token: str | None = field(default=None, repr=False, metadata={"secret": True})

        def __post_init__(self) -> None:
            check_url(self.url)
            if not self.query.strip():
                raise ValueError("query must not be empty")
            if not METRIC_NAME.fullmatch(self.metric):
                raise ValueError("metric must be letters, digits, _ and :, not a digit first")
            if self.timeout <= 0:
                raise ValueError("timeout must be more than 0s")
            check_token(self.bearer_token)

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self.labels = {"url": redacted_url(options.url)}
        self._endpoint = options.url.rstrip("/") + "/api/v1/query"
        self._session = new_session(options.bearer_token)

    def collect(self, now: float) -> list[Sample]:
        started = time.monotonic()
        try:
            points = self._query()
        except (FetchError, QueryError) as exc:
            return self._health(now, started, str(exc))
        values = [Sample(self.options.metric, p.value, now, p.labels) for p in points]
        return self._health(now, started, None, len(points)) + values

    def _query(self) -> list[Point]:
        options = self.options
        # Float seconds: Prometheus's durations ("10s") take no fractions.
        params = {"query": options.query, "timeout": f"{float(options.timeout):g}"}
        got = fetch(
            self._session, self._endpoint, options.timeout, options.verify_tls, params=params
        )
        return parse_response(got.status, got.body)

    def _health(
        self, now: float, started: float, error: str | None, series: float = math.nan
    ) -> list[Sample]:
        return [
            Sample(UP, 0.0 if error else 1.0, now, self.labels, error),
            Sample(SERIES, float(series), now, self.labels, error),
            Sample(DURATION, time.monotonic() - started, now, self.labels, error),
        ]
