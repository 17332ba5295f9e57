"""The HTTP API's server: the daemon's threaded stdlib server against waitress, on loopback.

    pip install waitress   # for this benchmark only; forewarn does not depend on it
    python bench/http_api.py [--requests 3000] [--concurrency 1,8,32] [--threads 4]

Both servers answer GET /api/v1/health with the same `monitor.api.Api` on the same kind of
state store (SQLite, WAL): the stdlib one through `monitor.web.serve`, as the daemon runs it;
waitress through a small WSGI adapter (below), with `--threads` worker threads. Each server
runs in a process of its own, so that the clients' threads do not share its interpreter lock.

For every concurrency N, N client threads send `--requests` requests in all (a fixed count:
the run is bounded) over raw sockets, each measuring its own requests from connect or send to
the last byte of the answer. Two ways of connecting: `new` opens a connection per request (as
Prometheus-style pollers and curl do); `reuse` asks for keep-alive (HTTP/1.1) and reuses the
connection while the server allows it (the stdlib server answers HTTP/1.0 and closes, so for
it `reuse` is `new` again). Prints a table, then one `name value unit` line per figure
(requests/s, p50 and p99 latency, server CPU per request, server RSS) and the waitress/stdlib
ratios. `--rounds` repeats it all, the two servers taking turns, and reports each figure's
median over the rounds: on a shared machine the noise then falls on both alike.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.api import Api
from monitor.api_config import ApiConfig
from monitor.metrics import Metrics
from monitor.store import Store
from monitor.web import Request, serve

PATH = "/api/v1/health"
TIMEOUT = 10.0  # seconds one request may take before the run counts it failed


# --- the servers (each run as `--serve NAME` in a process of its own) ----------------------


def wsgi_app(api: Api) -> Callable[..., Iterable[bytes]]:
    """The API as a WSGI application (what waitress serves)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                headers[key.replace("_", "-").lower()] = environ[key]
        body = environ["wsgi.input"]
        request = Request(
            environ["REQUEST_METHOD"],
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
            headers,
            body.read,
        )
        response = api(request)
        head = [("Content-Type", response.content_type), *response.headers.items()]
        head.append(("Content-Length", str(len(response.body))))
        start_response(f"{response.status} {response.status.phrase}", head)
        return [response.body]

    return app


def run_server(name: str, threads: int) -> None:
    state = Path(tempfile.mkdtemp(prefix="forewarn-bench-"))
    api = Api(Store(state / "forewarn.db"), ApiConfig())
    if name == "stdlib":
        server = serve(Metrics(), "127.0.0.1:0", api=api)
        assert server is not None
        print(f"PORT {server.address[1]}", flush=True)
        sys.stdin.read()  # until the benchmark closes our stdin
        server.shutdown()
        return
    import waitress.server

    # Its "task queue depth" warnings (requests waiting for a worker) would drown the report.
    logging.getLogger("waitress").setLevel(logging.ERROR)
    wsgi = waitress.server.create_server(wsgi_app(api), host="127.0.0.1", port=0, threads=threads)
    print(f"PORT {wsgi.effective_port}", flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), wsgi.close(), os._exit(0))).start()
    wsgi.run()


@dataclass
class Server:
    name: str
    process: subprocess.Popen[str]
    port: int

    @classmethod
    def start(cls, name: str, threads: int) -> Server:
        command = [sys.executable, __file__, "--serve", name, "--threads", str(threads)]
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("PORT "):
            process.kill()
            raise SystemExit(f"{name} did not start (is waitress installed? pip install waitress)")
        return cls(name, process, int(line.split()[1]))

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)

    def usage(self) -> tuple[float, int]:
        """(CPU seconds so far, RSS bytes) of the server process."""
        process = psutil.Process(self.process.pid)
        times = process.cpu_times()
        return times.user + times.system, process.memory_info().rss


# --- the clients ----------------------------------------------------------------------------


class Client:
    """One client thread's connection: keeps it while the server does, if asked to."""

    def __init__(self, port: int, reuse: bool) -> None:
        self.port, self.reuse = port, reuse
        self.sock: Any = None
        connection = "keep-alive" if reuse else "close"
        self.request = f"GET {PATH} HTTP/1.1\r\nHost: bench\r\nConnection: {connection}\r\n\r\n"

    def get(self) -> None:
        import socket

        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        self.sock.sendall(self.request.encode())
        head, body = self._read_head()
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
        length = int(_header(head, b"content-length") or b"0")
        while len(body) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("the answer ended early")
            body += chunk
        keep = (
            self.reuse and head.startswith(b"HTTP/1.1") and _header(head, b"connection") != b"close"
        )
        if not keep:
            self.close()

    def _read_head(self) -> tuple[bytes, bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("the connection closed before an answer")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return head, body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().lower()
    return None


@dataclass(frozen=True)
class Result:
    server: str
    mode: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_request: float
    rss_mib: float


def run_load(server: Server, concurrency: int, total: int, reuse: bool) -> Result:
    counter = iter(range(total))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []

    def worker() -> None:
        client = Client(server.port, reuse)
        mine: list[float] = []
        while _take(counter, lock):
            start = time.perf_counter()
            try:
                client.get()
                mine.append(time.perf_counter() - start)
            except (OSError, RuntimeError) as exc:
                client.close()
                with lock:
                    errors.append(str(exc))
        client.close()
        with lock:
            latencies.extend(mine)

    cpu_before, _ = server.usage()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu_after, rss = server.usage()
    ordered = sorted(latencies)
    return Result(
        server=server.name,
        mode="reuse" if reuse else "new",
        concurrency=concurrency,
        rps=len(ordered) / elapsed,
        p50_ms=1000 * statistics.median(ordered),
        p99_ms=1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        errors=len(errors),
        cpu_us_per_request=1e6 * (cpu_after - cpu_before) / max(1, len(ordered)),
        rss_mib=rss / 2**20,
    )


def _take(counter: Iterator[int], lock: threading.Lock) -> bool:
    with lock:
        return next(counter, None) is not None


# --- the report -----------------------------------------------------------------------------


def report(results: list[Result]) -> None:
    columns = "server    conn    N    req/s  p50 ms  p99 ms errors CPU µs/req RSS MiB"
    print(columns)
    for r in results:
        print(
            f"{r.server:9} {r.mode:5} {r.concurrency:>3} {r.rps:>8.0f} {r.p50_ms:>7.2f} "
            f"{r.p99_ms:>7.2f} {r.errors:>6} {r.cpu_us_per_request:>10.0f} {r.rss_mib:>7.1f}"
        )
    print()
    for r in results:
        key = f"{r.server}_{r.mode}_c{r.concurrency}"
        print(f"{key}_throughput {r.rps:.0f} req/s")
        print(f"{key}_p50 {r.p50_ms:.2f} ms")
        print(f"{key}_p99 {r.p99_ms:.2f} ms")
        print(f"{key}_errors {r.errors} requests")
        print(f"{key}_server_cpu {r.cpu_us_per_request:.0f} us/request")
    stdlib = {(r.mode, r.concurrency): r for r in results if r.server == "stdlib"}
    for r in results:
        base = stdlib.get((r.mode, r.concurrency))
        if r.server != "waitress" or base is None:
            continue
        key = f"waitress_over_stdlib_{r.mode}_c{r.concurrency}"
        print(f"{key}_throughput {r.rps / base.rps:.2f} ratio")
        print(f"{key}_p99 {r.p99_ms / base.p99_ms:.2f} ratio")
        print(f"{key}_server_cpu {r.cpu_us_per_request / base.cpu_us_per_request:.2f} ratio")
    for name, rss in {r.server: r.rss_mib for r in results}.items():
        print(f"{name}_server_rss {rss:.1f} MiB")


def median_of(runs: list[Result]) -> Result:
    """Each figure's median over the rounds (a shared machine's noise falls on both servers)."""
    first = runs[0]
    figures = ("rps", "p50_ms", "p99_ms", "cpu_us_per_request", "rss_mib")
    medians = {name: statistics.median(getattr(run, name) for run in runs) for name in figures}
    errors = sum(run.errors for run in runs)
    return Result(first.server, first.mode, first.concurrency, errors=errors, **medians)


def measure(name: str, levels: list[int], total: int, threads: int) -> list[Result]:
    server = Server.start(name, threads)
    try:
        run_load(server, 2, 200, reuse=False)  # warm-up: imports, first connections
        return [
            run_load(server, level, total, reuse) for reuse in (False, True) for level in levels
        ]
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per run (bounded)")
    parser.add_argument("--concurrency", default="1,8,32", help="client threads, comma-separated")
    parser.add_argument("--threads", type=int, default=4, help="waitress worker threads")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the servers alternating")
    parser.add_argument("--serve", choices=["stdlib", "waitress"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        run_server(args.serve, args.threads)
        return
    levels = [int(n) for n in args.concurrency.split(",")]
    runs: dict[tuple[str, str, int], list[Result]] = {}
    for _ in range(args.rounds):
        for name in ("stdlib", "waitress"):
            for result in measure(name, levels, args.requests, args.threads):
                runs.setdefault((result.server, result.mode, result.concurrency), []).append(result)
    report([median_of(each) for each in runs.values()])


if __name__ == "__main__":
    main()
