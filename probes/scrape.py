"""Reads a Prometheus text endpoint (node_exporter, any exporter, any `/metrics`) into samples.

Each series of the endpoint becomes a sample with the same name (after `prefix`) and the same
labels: a counter keeps its `_total` name, a histogram gives its `_bucket` (label `le`),
`_sum` and `_count` series, a summary its quantiles (label `quantile`), `_sum` and `_count`.
Values are kept as they are, NaN and infinities included; the samples are stamped with the
time of the scrape, not with a timestamp the endpoint may write. The body is parsed with
prometheus-client's parser (its OpenMetrics parser when the server answers in OpenMetrics).
A body that does not parse makes the whole scrape fail, as it does in Prometheus.

A scraped label named `probe` is renamed `exported_probe`: forewarn's own `probe` label says
which probe took the sample.

Mind the volume: node_exporter alone exposes about a thousand series, and every one becomes
a sample on every run. Set `metrics` to the few you write rules for.

Options:
- `url` (required): the endpoint, http:// or https://.
- `timeout` (default 10s): bounds the whole exchange, connect to last byte.
- `metrics`: the series to keep, as glob patterns (`node_filesystem_*`) matched against the
  series name or its family's name (so `http_request_duration_seconds` keeps the histogram's
  `_bucket`, `_sum` and `_count`); empty keeps all.
- `labels_drop`: label names (glob patterns) to remove from every series. Dropping a label
  that tells two series apart makes them look the same; the first one wins.
- `prefix`: put before every series name (`node_` + `load1`...), to keep sources apart.
- `verify_tls` (default true), `bearer_token` (a secret: `{ env = "..." }` or `{ file = "..." }`).

Metrics: the endpoint's series, and `scrape_up{url}` (1 when the endpoint answered 200 with
a body that parsed), `scrape_duration_seconds{url}`, `scrape_samples{url}` (series kept) and
`scrape_samples_scraped{url}` (series read, before `metrics` chose among them).

Example:

    [[probe]]
    name = "node"
    kind = "scrape"
    url = "http://127.0.0.1:9100/metrics"
    metrics = ["node_filesystem_avail_bytes", "node_load1", "node_md_disks"]
    labels_drop = ["device_error"]
"""

import logging
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, ClassVar

from probes._text import first_line
from probes.base import Duration, Sample
from probes.http import (
    DeadlinePassed,
    check_url,
    describe_failure,
    new_session,
    redacted_url,
    request_failures,
)

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

UP = "scrape_up"
DURATION = "scrape_duration_seconds"
SAMPLES = "scrape_samples"
SAMPLES_SCRAPED = "scrape_samples_scraped"
DEFAULT_TIMEOUT = Duration(10)
MAX_BODY_BYTES = 32 * 1024 * 1024
CHUNK_BYTES = 64 * 1024
RESERVED_LABELS = ("probe",)  # set by the scheduler on every sample
METRIC_PREFIX = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?")
TEXT_FORMAT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
OPENMETRICS = "application/openmetrics-text"


class FetchError(Exception):
    """The request failed; the message is short and fit for a ticket."""


@dataclass(frozen=True)
class Fetched:
    status: int
    content_type: str
    body: bytes


def check_token(token: str | None) -> None:
    if token is not None and (not token or any(c in token for c in "\r\n\0")):
        raise ValueError("bearer_token must be one non-empty line")  # never quote a secret


def fetch(
    session: "requests.Session",
    url: str,
    timeout: float,
    verify_tls: bool = True,
    **request: Any,
) -> Fetched:
    """GET `url`, the whole exchange within `timeout`, the body at most MAX_BODY_BYTES."""
    deadline = time.monotonic() + timeout
    try:
        with session.get(url, timeout=timeout, verify=verify_tls, stream=True, **request) as got:
            body = _read_body(got.raw, deadline)
            return Fetched(got.status_code, got.headers.get("Content-Type", ""), body)
    except request_failures() as exc:
        raise FetchError(describe_failure(exc, timeout)) from None
    finally:
        session.close()  # a fresh connection each time: a restarted server is seen at once


def _read_body(raw: Any, deadline: float) -> bytes:
    body = bytearray()
    # read1 returns what has arrived (urllib3 >= 2.3), so a trickling server meets the deadline
    read = getattr(raw, "read1", None) or raw.read
    while chunk := read(CHUNK_BYTES, decode_content=True):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise FetchError(f"response larger than {MAX_BODY_BYTES // 2**20} MiB")
        if time.monotonic() > deadline:
            raise DeadlinePassed
    return bytes(body)


def own_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels with those forewarn sets itself renamed `exported_<name>`, as Prometheus does."""
    return {(f"exported_{k}" if k in RESERVED_LABELS else k): v for k, v in labels.items()}


@dataclass(frozen=True)
class Series:
    family: str
    name: str
    labels: dict[str, str]
    value: float


def parse_exposition(text: str, content_type: str) -> list[Series]:
    """Every series of a Prometheus text (or OpenMetrics) body; ValueError when it is invalid."""
    if content_type.split(";")[0].strip().lower() == OPENMETRICS:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    else:
        from prometheus_client.parser import text_string_to_metric_families
    return [
        Series(family.name, s.name, s.labels, float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _matches_any(names: Iterable[str], patterns: list[str]) -> bool:
    return any(fnmatchcase(name, pattern) for name in names for pattern in patterns)


class ScrapeProbe:
    kind: ClassVar[str] = "scrape"

    @dataclass(frozen=True)
    class Options:
        """`metrics` and `labels_drop` are glob patterns; `metrics` empty keeps every series."""

        url: str
        timeout: Duration = DEFAULT_TIMEOUT
        metrics: list[str] = field(default_factory=list)
        labels_drop: list[str] = field(default_factory=list)
        prefix: str = ""
        verify_tls: bool = True
        bearer_token: str | None = field(default=None, repr=False, metadata={"secret": True})

        def __post_init__(self) -> None:
            check_url(self.url)
            if self.timeout <= 0:
                raise ValueError("timeout must be more than 0s")
            if "" in self.metrics or "" in self.labels_drop:
                raise ValueError("metrics and labels_drop must not hold an empty pattern")
            if not METRIC_PREFIX.fullmatch(self.prefix):
                raise ValueError("prefix must be letters, digits, _ and :, not a digit first")
            check_token(self.bearer_token)

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self.labels = {"url": redacted_url(options.url)}
        self._session = new_session(options.bearer_token)

    def collect(self, now: float) -> list[Sample]:
        started = time.monotonic()
        try:
            series = self._scrape()
        except FetchError as exc:
            return self._health(now, started, str(exc))
        kept = self._samples(series, now)
        return self._health(now, started, None, len(kept), len(series)) + kept

    def _scrape(self) -> list[Series]:
        options = self.options
        got = fetch(
            self._session, options.url, options.timeout, options.verify_tls,
            headers={"Accept": TEXT_FORMAT},
        )  # fmt: skip
        if got.status != 200:
            raise FetchError(f"unexpected status {got.status}")
        try:
            return parse_exposition(got.body.decode("utf-8", "replace"), got.content_type)
        except ValueError as exc:  # the parser's messages quote the bad line: untrusted text
            raise FetchError(f"not a Prometheus text body: {first_line(str(exc))}") from None

    def _samples(self, series: list[Series], now: float) -> list[Sample]:
        """The wanted series as samples, once each: dropped labels may make two look alike."""
        samples: dict[tuple[str, frozenset[tuple[str, str]]], Sample] = {}
        for one in series:
            if self._wanted(one):
                sample = self._sample(one, now)
                samples.setdefault((sample.metric, frozenset(sample.labels.items())), sample)
        return list(samples.values())

    def _wanted(self, series: Series) -> bool:
        patterns = self.options.metrics
        return not patterns or _matches_any((series.name, series.family), patterns)

    def _sample(self, series: Series, now: float) -> Sample:
        drop = self.options.labels_drop
        labels = {k: v for k, v in series.labels.items() if not _matches_any((k,), drop)}
        return Sample(self.options.prefix + series.name, series.value, now, own_labels(labels))

    def _health(
        self,
        now: float,
        started: float,
        error: str | None,
        kept: float = math.nan,
        scraped: float = math.nan,
    ) -> list[Sample]:
        """The scrape's own samples; the counts are NaN when it failed."""
        return [
            Sample(UP, 0.0 if error else 1.0, now, self.labels, error),
            Sample(DURATION, time.monotonic() - started, now, self.labels, error),
            Sample(SAMPLES, float(kept), now, self.labels, error),
            Sample(SAMPLES_SCRAPED, float(scraped), now, self.labels, error),
        ]
