"""The scrape probe against the real node_exporter, and a loopback server for the odd cases."""

import math
import os
from collections.abc import Iterator
from typing import Any

import pytest
from http_service import free_port
from probe_helpers import LoopbackHttpServer, QuietHandler
from prometheus_servers import ServerProcess, node_exporter  # noqa: F401  (a fixture)

from monitor.config import parse_config
from probes.base import Duration, Sample
from probes.scrape import ScrapeProbe

NOW = 1_700_000_000.0

EXPOSITION = b"""\
# HELP requests_total Requests served.
# TYPE requests_total counter
requests_total{code="200",probe="web"} 1027
requests_total{code="500",probe="web"} 3
# HELP latency_seconds Request latency.
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 5
latency_seconds_bucket{le="+Inf"} 7
latency_seconds_sum 1.5
latency_seconds_count 7
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} NaN
rpc_seconds_sum 2
rpc_seconds_count 4
temperature_celsius{sensor="cpu",pod="a"} +Inf
temperature_celsius{sensor="cpu",pod="b"} 41 1600000000000
"""

OPENMETRICS = b"""\
# TYPE jobs counter
jobs_total{queue="mail"} 12.0
# EOF
"""


class Handler(QuietHandler):
    def do_GET(self) -> None:
        routes = {
            "/metrics": (200, "text/plain; version=0.0.4", EXPOSITION),
            "/openmetrics": (200, "application/openmetrics-text; version=1.0.0", OPENMETRICS),
            "/garbage": (200, "text/plain", b"<html>not { metrics</html>\n"),
            "/private": (200, "text/plain", EXPOSITION),
        }
        if self.path == "/hang":
            self.hang()
            return
        if self.path == "/private" and self.headers.get("Authorization") != "Bearer s3cret":
            self.reply(401, b"who are you\n", {"Content-Type": "text/plain"})
            return
        status, content_type, body = routes.get(self.path, (404, "text/plain", b"no such page\n"))
        self.reply(status, body, {"Content-Type": content_type})


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    with LoopbackHttpServer(Handler) as server:
        yield server.url()


def scrape(url: str, **options: Any) -> tuple[dict[str, Sample], list[Sample]]:
    """(the probe's own samples by metric, the scraped series)."""
    samples = ScrapeProbe("scrape", ScrapeProbe.Options(url=url, **options)).collect(NOW)
    assert all(s.timestamp == NOW for s in samples)
    own = {s.metric: s for s in samples if s.metric.startswith("scrape_")}
    assert all(s.labels == {"url": url} for s in own.values())
    return own, [s for s in samples if not s.metric.startswith("scrape_")]


def values(series: list[Sample], metric: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in series if s.metric == metric}


def assert_up(own: dict[str, Sample], kept: int, scraped: int) -> None:
    assert own["scrape_up"].value == 1.0 and own["scrape_up"].error is None
    assert own["scrape_samples"].value == kept
    assert own["scrape_samples_scraped"].value == scraped
    assert 0.0 < own["scrape_duration_seconds"].value < 5.0


def assert_down(own: dict[str, Sample], error: str) -> None:
    assert own["scrape_up"].value == 0.0
    assert all(s.error == error for s in own.values())
    assert math.isnan(own["scrape_samples"].value)


# --- the real node_exporter -----------------------------------------------------------------------


def test_node_exporter_load_and_filesystems(node_exporter: ServerProcess) -> None:  # noqa: F811
    url = f"{node_exporter.url}/metrics"
    own, series = scrape(url, metrics=["node_load1", "node_filesystem_avail_bytes"])
    assert {s.metric for s in series} == {"node_load1", "node_filesystem_avail_bytes"}
    assert_up(own, len(series), own["scrape_samples_scraped"].value)
    [load1] = [s for s in series if s.metric == "node_load1"]
    assert load1.labels == {} and abs(load1.value - os.getloadavg()[0]) < 1.0
    filesystems = [s for s in series if s.metric == "node_filesystem_avail_bytes"]
    assert filesystems, "node_exporter reported no filesystem"
    for sample in filesystems:
        assert {"device", "fstype", "mountpoint"} <= set(sample.labels)
        stat = os.statvfs(sample.labels["mountpoint"])
        avail = stat.f_bavail * stat.f_frsize
        assert abs(sample.value - avail) <= max(0.02 * stat.f_blocks * stat.f_frsize, 200e6)


def test_node_exporter_counters_keep_total_and_summaries_their_series(
    node_exporter: ServerProcess,  # noqa: F811
) -> None:
    _, series = scrape(f"{node_exporter.url}/metrics", metrics=["node_cpu_seconds", "go_gc_*"])
    names = {s.metric for s in series}
    assert "node_cpu_seconds_total" in names  # matched by its family name, named as exposed
    assert {"go_gc_duration_seconds", "go_gc_duration_seconds_sum"} <= names
    assert {"go_gc_duration_seconds_count"} <= names
    cpu = [s for s in series if s.metric == "node_cpu_seconds_total"]
    assert {s.labels["mode"] for s in cpu} >= {"idle", "user", "system"}
    assert len({s.labels["cpu"] for s in cpu}) == os.cpu_count()
    quantiles = {s.labels.get("quantile") for s in series if s.metric == "go_gc_duration_seconds"}
    assert "0.5" in quantiles


def test_node_exporter_whole_with_labels_dropped_and_a_prefix(
    node_exporter: ServerProcess,  # noqa: F811
) -> None:
    own, series = scrape(
        f"{node_exporter.url}/metrics", labels_drop=["mode", "cpu"], prefix="host_"
    )
    assert own["scrape_samples_scraped"].value > 300  # node_exporter is big: hence `metrics`
    assert all(s.metric.startswith("host_") for s in series)
    assert not any({"mode", "cpu"} & set(s.labels) for s in series)
    cpu = [s for s in series if s.metric == "host_node_cpu_seconds_total"]
    assert len(cpu) == 1  # every cpu and mode looked alike once dropped: the first one stayed
    assert own["scrape_samples"].value == len(series) < own["scrape_samples_scraped"].value


# --- the exposition format ------------------------------------------------------------------------


def test_counters_histograms_summaries_and_odd_values(exporter: str) -> None:
    own, series = scrape(f"{exporter}/metrics")
    assert_up(own, 11, 11)
    assert values(series, "requests_total") == {
        (("code", "200"), ("exported_probe", "web")): 1027.0,
        (("code", "500"), ("exported_probe", "web")): 3.0,
    }
    buckets = values(series, "latency_seconds_bucket")
    assert buckets == {(("le", "0.1"),): 5.0, (("le", "+Inf"),): 7.0}
    assert values(series, "latency_seconds_sum") == {(): 1.5}
    assert math.isnan(values(series, "rpc_seconds")[(("quantile", "0.5"),)])
    temperatures = values(series, "temperature_celsius")
    assert temperatures[(("pod", "a"), ("sensor", "cpu"))] == math.inf
    assert temperatures[(("pod", "b"), ("sensor", "cpu"))] == 41.0  # its own timestamp ignored


def test_globs_choose_series_by_name_or_family(exporter: str) -> None:
    own, series = scrape(f"{exporter}/metrics", metrics=["latency_seconds", "requests_*"])
    assert {s.metric for s in series} == {
        "latency_seconds_bucket", "latency_seconds_sum", "latency_seconds_count", "requests_total"
    }  # fmt: skip
    assert_up(own, 6, 11)


def test_an_openmetrics_answer_is_parsed_as_openmetrics(exporter: str) -> None:
    own, series = scrape(f"{exporter}/openmetrics")
    assert_up(own, 1, 1)
    assert values(series, "jobs_total") == {(("queue", "mail"),): 12.0}


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/garbage", "not a Prometheus text body: "),
        ("/missing", "unexpected status 404"),
        ("/private", "unexpected status 401"),
    ],
)
def test_a_bad_answer_fails_the_whole_scrape(exporter: str, path: str, error: str) -> None:
    own, series = scrape(f"{exporter}{path}")
    assert series == []
    assert_down(own, own["scrape_up"].error or "")
    assert (own["scrape_up"].error or "").startswith(error)
    assert "\n" not in (own["scrape_up"].error or "")


def test_a_closed_port_and_a_hanging_server(exporter: str) -> None:
    own, _ = scrape(f"http://127.0.0.1:{free_port()}/metrics")
    assert_down(own, "connection refused")
    own, _ = scrape(f"{exporter}/hang", timeout=Duration(0.3))
    assert_down(own, "timed out after 0.3s")
    assert own["scrape_duration_seconds"].value < 2.0


def test_the_bearer_token_comes_from_a_secret(
    exporter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOREWARN_TEST_SCRAPE_TOKEN", "s3cret")
    config = parse_config(
        f"""
        [[probe]]
        name = "app"
        kind = "scrape"
        url = "{exporter}/private"
        metrics = ["requests_total"]
        bearer_token = {{ env = "FOREWARN_TEST_SCRAPE_TOKEN" }}
        timeout = "2s"
        """,
        "config.toml",
    )
    [probe] = config.probes
    assert "s3cret" not in repr(probe)
    samples = ScrapeProbe("app", probe.options).collect(NOW)
    assert [s.value for s in samples if s.metric == "scrape_up"] == [1.0]
    assert len([s for s in samples if s.metric == "requests_total"]) == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "ftp://h/metrics"}, "url must start with http"),
        ({"url": "http://h/", "timeout": Duration(0)}, "more than 0s"),
        ({"url": "http://h/", "metrics": [""]}, "empty pattern"),
        ({"url": "http://h/", "prefix": "9lives_"}, "prefix must be"),
        ({"url": "http://h/", "prefix": "node-"}, "prefix must be"),
        ({"url": "http://h/", "bearer_token": "two\nlines"}, "one non-empty line"),
    ],
)
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScrapeProbe.Options(**options)
