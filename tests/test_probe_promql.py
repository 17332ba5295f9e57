"""The promql probe against the real Prometheus scraping the real node_exporter."""

import json
import math
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from http_service import free_port
from probe_helpers import LoopbackHttpServer, QuietHandler
from prometheus_servers import ServerProcess, prometheus  # noqa: F401  (a fixture)

from monitor.config import parse_config
from probes.base import Duration, Sample
from probes.promql import PromqlProbe, QueryError, parse_response

NOW = 1_700_000_000.0
OWN = ("promql_up", "promql_series", "promql_duration_seconds")


def run(url: str, query: str, **options: Any) -> tuple[dict[str, Sample], list[Sample]]:
    """(the probe's own samples by metric, the result samples)."""
    probe = PromqlProbe("fleet", PromqlProbe.Options(url=url, query=query, **options))
    samples = probe.collect(NOW)
    assert all(s.timestamp == NOW for s in samples)
    own = {s.metric: s for s in samples if s.metric in OWN}
    assert [s.metric for s in samples[: len(OWN)]] == list(OWN)
    assert all(s.labels == {"url": url} for s in own.values())
    return own, samples[len(OWN) :]


def assert_ok(own: dict[str, Sample], series: int) -> None:
    assert own["promql_up"].value == 1.0 and own["promql_up"].error is None
    assert own["promql_series"].value == series
    assert 0.0 < own["promql_duration_seconds"].value < 5.0


def assert_failed(own: dict[str, Sample]) -> str:
    assert own["promql_up"].value == 0.0 and math.isnan(own["promql_series"].value)
    error = own["promql_up"].error
    assert error and all(s.error == error for s in own.values()) and "\n" not in error
    return error


# --- the real Prometheus --------------------------------------------------------------------------


def test_each_series_becomes_a_sample_with_its_labels(prometheus: ServerProcess) -> None:  # noqa: F811
    own, results = run(prometheus.url, 'up{job="node"}')
    assert_ok(own, 1)
    [up] = results
    assert up.metric == "promql_value" and up.value == 1.0 and up.error is None
    # the series' own name goes to `metric_name`: `name` is many exporters' own label
    assert up.labels == {"metric_name": "up", "job": "node", "instance": up.labels["instance"]}


def test_a_node_exporter_value_through_prometheus(prometheus: ServerProcess) -> None:  # noqa: F811
    own, results = run(prometheus.url, "sum(node_load1)", metric="fleet_load1")
    assert_ok(own, 1)
    [load] = results
    assert load.metric == "fleet_load1" and load.labels == {}  # sum() drops the name
    assert abs(load.value - os.getloadavg()[0]) < 1.0


def test_several_series_and_reserved_labels(prometheus: ServerProcess) -> None:  # noqa: F811
    query = (
        'label_replace(label_replace(node_cpu_seconds_total{mode="idle"},'
        ' "probe", "blackbox", "", ""), "name", "ssh.service", "", "")'
    )
    own, results = run(prometheus.url, query, metric="cpu_idle_seconds_total")
    assert_ok(own, os.cpu_count() or 0)
    assert len({s.labels["cpu"] for s in results}) == os.cpu_count()
    for sample in results:
        assert sample.labels["exported_probe"] == "blackbox" and "probe" not in sample.labels
        assert sample.labels["name"] == "ssh.service"
        assert sample.labels["metric_name"] == "node_cpu_seconds_total"
        assert sample.value > 0.0


@pytest.mark.parametrize(
    ("query", "value"),
    [("1 + 1", 2.0), ("0 / 0", math.nan), ("vector(1) / 0", math.inf), ("-1 / 0", -math.inf)],
)
def test_scalars_and_non_finite_values_are_kept(
    prometheus: ServerProcess,  # noqa: F811
    query: str,
    value: float,
) -> None:
    own, [result] = run(prometheus.url, query)
    assert_ok(own, 1)
    assert result.labels == {}
    assert math.isnan(result.value) if math.isnan(value) else result.value == value


def test_an_empty_result_is_zero_series(prometheus: ServerProcess) -> None:  # noqa: F811
    own, results = run(prometheus.url, 'up{job="no-such-job"}')
    assert_ok(own, 0)
    assert results == []


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("up{", "bad_data: "),
        ('up{job="node"}[1m]', "the query returns a range vector"),
        ('"a string"', "not a number in the result"),
    ],
)
def test_a_failed_query_says_why(prometheus: ServerProcess, query: str, error: str) -> None:  # noqa: F811
    own, results = run(prometheus.url, query)
    assert results == []
    assert assert_failed(own).startswith(error)


def test_a_path_prefix_in_the_url_is_kept(prometheus: ServerProcess) -> None:  # noqa: F811
    own, _ = run(f"{prometheus.url}/", "up")  # a trailing slash is not doubled
    assert own["promql_up"].value == 1.0


# --- what only a stand-in server can do -----------------------------------------------------------


class Handler(QuietHandler):
    seen: list[dict[str, Any]]

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.seen.append({"path": parts.path, "query": parse_qs(parts.query), **self.headers})
        if parts.path == "/hang/api/v1/query":
            self.hang()
            return
        if parts.path == "/proxy/api/v1/query":
            self.reply(502, b"<html>Bad Gateway</html>")
            return
        answer = {"status": "success", "data": {"resultType": "vector", "result": []}}
        self.reply(200, json.dumps(answer).encode())


@pytest.fixture(scope="module")
def stand_in() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    with LoopbackHttpServer(Handler, seen=seen) as server:
        yield server.url(), seen


def test_the_token_prefix_and_timeout_are_sent(
    stand_in: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = stand_in
    monkeypatch.setenv("FOREWARN_TEST_PROM_TOKEN", "s3cret")
    config = parse_config(
        f"""
        [[probe]]
        name = "fleet"
        kind = "promql"
        url = "{url}/prom"
        query = 'up == 0'
        timeout = "2.5s"
        bearer_token = {{ env = "FOREWARN_TEST_PROM_TOKEN" }}
        """,
        "config.toml",
    )
    [probe] = config.probes
    assert "s3cret" not in repr(probe)
    samples = PromqlProbe("fleet", probe.options).collect(NOW)
    assert [s.value for s in samples if s.metric == "promql_up"] == [1.0]
    request = seen[-1]
    assert request["path"] == "/prom/api/v1/query"
    assert request["query"] == {"query": ["up == 0"], "timeout": ["2.5"]}
    assert request["Authorization"] == "Bearer s3cret"


def test_a_proxy_error_page_a_hang_and_a_closed_port(
    stand_in: tuple[str, list[dict[str, Any]]],
) -> None:
    url, _ = stand_in
    assert assert_failed(run(f"{url}/proxy", "up")[0]) == "unexpected status 502"
    own, _ = run(f"{url}/hang", "up", timeout=Duration(0.3))
    assert assert_failed(own) == "timed out after 0.3s"
    assert own["promql_duration_seconds"].value < 2.0
    closed = run(f"http://127.0.0.1:{free_port()}", "up")[0]
    assert assert_failed(closed) == "connection refused"


@pytest.mark.parametrize(
    ("status", "answer", "error"),
    [
        (422, {"status": "error", "errorType": "execution", "error": "too\nmany samples"},
         "execution: too"),
        (200, {"status": "success"}, "the answer has no data"),
        (200, {"status": "success", "data": {"resultType": "streams", "result": []}},
         "unexpected result type streams"),
        (200, {"status": "success", "data": {"resultType": "vector", "result": [{"x": 1}]}},
         "a result series has no labels"),
        (200, [1, 2], "not a JSON answer"),
    ],
)  # fmt: skip
def test_odd_answers_are_errors_not_crashes(status: int, answer: Any, error: str) -> None:
    with pytest.raises(QueryError) as failed:
        parse_response(status, json.dumps(answer).encode())
    assert str(failed.value) == error


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "localhost:9090", "query": "up"}, "url must start with http"),
        ({"url": "http://h", "query": "  "}, "query must not be empty"),
        ({"url": "http://h", "query": "up", "metric": "fleet-up"}, "metric must be"),
        ({"url": "http://h", "query": "up", "timeout": Duration(0)}, "more than 0s"),
        ({"url": "http://h", "query": "up", "bearer_token": ""}, "one non-empty line"),
    ],
)
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PromqlProbe.Options(**options)
