"""The clock probe: the real adjtimex(2) of this machine, real chronyd daemons on 127.0.0.1
read by the real chronyc, and captured chronyc / timedatectl outputs (tests/data/clock/)."""

import contextlib
import ctypes
import math
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from probes.base import Sample
from probes.clock import (
    ESTERROR,
    MAXERROR,
    OFFSET,
    STA_NANO,
    STA_UNSYNC,
    SYNCHRONIZED,
    TIME_ERROR,
    ClockProbe,
    SourceFailed,
    Timex,
    parse_chrony_tracking,
    parse_timedatectl_show,
    read_adjtimex,
    reading_from_timex,
    run_command,
)

NOW = 1_700_000_000.0
DATA = Path(__file__).parent / "data" / "clock"
ON_LINUX = os.uname().sysname == "Linux"


def captured(name: str) -> str:
    return (DATA / name).read_text()


def collect(**options: Any) -> dict[str, Sample]:
    samples = ClockProbe("clock", ClockProbe.Options(**options)).collect(NOW)
    assert len({s.metric for s in samples}) == len(samples)
    assert all(s.timestamp == NOW for s in samples)
    return {s.metric: s for s in samples}


# --- adjtimex on this machine -----------------------------------------------------------------


class NtpTimeval(ctypes.Structure):
    """glibc's `struct ntptimeval`, for a second reading through another libc entry point."""

    _fields_ = (
        ("tv_sec", ctypes.c_long),
        ("tv_usec", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("tai", ctypes.c_long),
        ("reserved", ctypes.c_long * 4),
    )


def ntp_gettime() -> tuple[int, NtpTimeval]:
    libc = ctypes.CDLL(None)
    value = NtpTimeval()
    return libc.ntp_gettime(ctypes.byref(value)), value


@pytest.mark.skipif(not ON_LINUX, reason="adjtimex(2) is Linux's")
def test_adjtimex_agrees_with_ntp_gettime() -> None:
    reading = read_adjtimex()
    state, other = ntp_gettime()
    assert reading.synchronized == (state != TIME_ERROR)
    # The kernel adds 500 µs a second to maxerror: two readings moments apart agree closely.
    assert reading.maxerror_seconds == pytest.approx(other.maxerror * 1e-6, abs=0.01)
    assert reading.esterror_seconds == pytest.approx(other.esterror * 1e-6, abs=1e-6)
    assert reading.maxerror_seconds is not None and 0.0 <= reading.maxerror_seconds <= 16.0
    assert reading.offset_seconds is not None and math.isfinite(reading.offset_seconds)


@pytest.mark.skipif(not ON_LINUX, reason="adjtimex(2) is Linux's")
def test_auto_reads_the_kernel_first() -> None:
    result = collect()
    assert set(result) == {SYNCHRONIZED, OFFSET, MAXERROR, ESTERROR}
    assert all(s.labels == {"source": "adjtimex"} and s.error is None for s in result.values())
    assert result[SYNCHRONIZED].value in (0.0, 1.0)


def test_timex_offsets_are_in_nanoseconds_only_with_sta_nano() -> None:
    micro = Timex(offset=-1500, maxerror=250_000, esterror=1_000, status=0)
    nano = Timex(offset=-1_500_000, maxerror=250_000, esterror=1_000, status=STA_NANO)
    for timex in (micro, nano):
        reading = reading_from_timex(timex, 0)
        assert reading.offset_seconds == pytest.approx(-0.0015)
        assert reading.maxerror_seconds == pytest.approx(0.25)  # always microseconds
        assert reading.esterror_seconds == pytest.approx(0.001)
        assert reading.synchronized


def test_timex_unsynchronized_by_status_flag_or_clock_state() -> None:
    assert not reading_from_timex(Timex(status=STA_UNSYNC), 0).synchronized
    assert not reading_from_timex(Timex(status=0), TIME_ERROR).synchronized


# --- chrony: captured outputs -------------------------------------------------------------------


def test_a_synchronized_chrony_reading() -> None:
    reading = parse_chrony_tracking(captured("chronyc-tracking-synchronized.csv"))
    assert reading.synchronized
    assert reading.offset_seconds == pytest.approx(-0.000001023)  # "1.023 µs fast"
    expected = 0.000001023 + 0.000001070 + 0.000003543 / 2  # |offset| + dispersion + delay/2
    assert reading.maxerror_seconds == pytest.approx(expected)


def test_chrony_without_a_reachable_source_is_not_synchronized() -> None:
    assert not parse_chrony_tracking(captured("chronyc-tracking-unsynchronized.csv")).synchronized


def test_chrony_serving_its_own_local_clock_is_not_synchronized() -> None:
    reading = parse_chrony_tracking(captured("chronyc-tracking-local-reference.csv"))
    assert not reading.synchronized


def test_output_that_is_not_a_tracking_line_is_refused() -> None:
    for text in (captured("chronyc-no-daemon.txt"), "", "7F000001,a,b\n"):
        with pytest.raises(SourceFailed):
            parse_chrony_tracking(text)
    bad_number = captured("chronyc-tracking-synchronized.csv").replace("-0.000001023", "x")
    with pytest.raises(SourceFailed, match="not a number"):
        parse_chrony_tracking(bad_number)


# --- chrony: real daemons -----------------------------------------------------------------------


@dataclass(frozen=True)
class Chrony:
    synchronized_socket: str  # a chronyd whose source is the serving one
    lost_socket: str  # a chronyd whose source never answers
    serving_socket: str  # a chronyd serving its own local clock


LOCAL_SERVER = "local stratum 8\nallow 127.0.0.1"
SERVER = "server 127.0.0.1 port"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_chronyd(directory: Path, name: str, lines: list[str]) -> str:
    """A chronyd that leaves the system clock alone (-x), with its own command socket."""
    socket_path, config = directory / f"{name}.sock", directory / f"{name}.conf"
    own = [f"bindcmdaddress {socket_path}", "cmdport 0", f"pidfile {directory / name}.pid"]
    config.write_text("\n".join(lines + own) + "\n")
    log = directory / f"{name}.log"
    subprocess.run(
        ["chronyd", "-x", "-u", "root", "-f", str(config), "-l", str(log)],
        check=True, timeout=30, capture_output=True,
    )  # fmt: skip
    return str(socket_path)


def stop_chronyd(directory: Path) -> None:
    for pidfile in directory.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):  # it stopped already
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)


def chrony_synchronized(socket_path: str) -> bool:
    done = subprocess.run(
        ["chronyc", "-n", "-h", socket_path, "-c", "tracking"],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    return done.returncode == 0 and not done.stdout.rstrip().endswith("Not synchronised")


@pytest.fixture(scope="module")
def chrony(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chrony]:
    if not (shutil.which("chronyd") and shutil.which("chronyc")):
        pytest.skip("chrony is not installed (Debian package chrony)")
    if os.geteuid() != 0:
        pytest.skip("chronyd runs only as root")
    directory = tmp_path_factory.mktemp("chrony")
    directory.chmod(0o700)  # chronyd refuses a command socket in a directory others can enter
    port, silent_port = free_udp_port(), free_udp_port()
    try:
        poll = "iburst minpoll -4 maxpoll -4"  # a sample every 1/16 s: in sync within a second
        serving = start_chronyd(directory, "serving", [LOCAL_SERVER, f"port {port}"])
        synchronized = start_chronyd(directory, "client", [f"{SERVER} {port} {poll}", "port 0"])
        lost = start_chronyd(directory, "lost", [f"{SERVER} {silent_port} {poll}", "port 0"])
        deadline = time.monotonic() + 20
        while not chrony_synchronized(synchronized) and time.monotonic() < deadline:
            time.sleep(0.1)
        yield Chrony(synchronized, lost, serving)
    finally:
        stop_chronyd(directory)


def test_a_real_chronyd_synchronized_to_its_server(chrony: Chrony) -> None:
    result = collect(source="chrony", chrony_address=chrony.synchronized_socket)
    assert all(s.labels == {"source": "chrony"} and s.error is None for s in result.values())
    assert set(result) == {SYNCHRONIZED, OFFSET, MAXERROR}
    assert result[SYNCHRONIZED].value == 1.0
    assert abs(result[OFFSET].value) < 0.01  # both daemons read the same clock
    assert result[MAXERROR].value >= abs(result[OFFSET].value)


def test_a_real_chronyd_that_never_heard_its_server(chrony: Chrony) -> None:
    result = collect(source="chrony", chrony_address=chrony.lost_socket)
    assert result[SYNCHRONIZED].value == 0.0 and result[SYNCHRONIZED].error is None


def test_a_real_chronyd_serving_its_local_clock(chrony: Chrony) -> None:
    result = collect(source="chrony", chrony_address=chrony.serving_socket)
    assert result[SYNCHRONIZED].value == 0.0 and result[SYNCHRONIZED].error is None


def test_chronyc_that_cannot_reach_chronyd_is_an_error_sample(tmp_path: Path) -> None:
    if not shutil.which("chronyc"):
        pytest.skip("chrony is not installed (Debian package chrony)")
    result = collect(source="chrony", chrony_address=str(tmp_path / "no-daemon.sock"))
    assert set(result) == {SYNCHRONIZED}
    assert result[SYNCHRONIZED].value == 0.0
    assert result[SYNCHRONIZED].error == (
        "chronyc failed (exit status 1): Could not open connection to daemon"
    )


# --- timedatectl ---------------------------------------------------------------------------------


def test_timedatectl_reading_captured_on_an_unsynchronized_machine() -> None:
    reading = parse_timedatectl_show(captured("timedatectl-show-unsynchronized.txt"))
    assert reading.source == "timedatectl" and not reading.synchronized
    assert reading.offset_seconds is None and reading.maxerror_seconds is None


def test_timedatectl_reading_with_ntp_synchronized_yes() -> None:
    # The capture with its one NTPSynchronized line changed: no machine here is synchronised.
    text = captured("timedatectl-show-unsynchronized.txt")
    assert "NTPSynchronized=no\n" in text
    synced = text.replace("NTPSynchronized=no\n", "NTPSynchronized=yes\n")
    assert parse_timedatectl_show(synced).synchronized


def test_timedatectl_output_without_the_property_is_refused() -> None:
    with pytest.raises(SourceFailed, match="NTPSynchronized"):
        parse_timedatectl_show(captured("timedatectl-no-systemd.txt"))


def test_the_real_timedatectl_gives_a_reading_or_an_error_sample() -> None:
    if not shutil.which("timedatectl"):
        pytest.skip("systemd's timedatectl is not installed")
    result = collect(source="timedatectl")
    sample = result[SYNCHRONIZED]
    assert sample.labels == {"source": "timedatectl"}
    # Without systemd as init (a container, this VM) it says so, on one line.
    assert sample.error is None or sample.error.startswith("timedatectl failed (exit status")
    assert sample.error is None or "\n" not in sample.error


# --- commands and options ----------------------------------------------------------------------


def test_a_command_that_hangs_is_stopped_at_the_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(SourceFailed, match=r"^sleep timed out after 0.3s$"):
        run_command(["sleep", "10"], 0.3)
    assert time.monotonic() - started < 5


def test_a_command_that_is_not_installed_says_so() -> None:
    with pytest.raises(SourceFailed, match=r"^forewarn-no-such-tool is not installed$"):
        run_command(["forewarn-no-such-tool"], 1.0)


def test_commands_run_without_a_shell_and_with_a_clean_environment() -> None:
    os.environ["FOREWARN_TEST_SECRET"] = "s3cret"
    try:
        printed = run_command(["env"], 5.0)
    finally:
        del os.environ["FOREWARN_TEST_SECRET"]
    assert "FOREWARN_TEST_SECRET" not in printed and "LC_ALL=C" in printed
    assert run_command(["echo", "$HOME;", "`id`"], 5.0) == "$HOME; `id`\n"


def test_the_chrony_command_line() -> None:
    plain = ClockProbe("c", ClockProbe.Options(source="chrony"))
    assert plain.chrony_command() == ["chronyc", "-n", "-c", "tracking"]
    remote = ClockProbe("c", ClockProbe.Options(source="chrony", chrony_address="ntp1"))
    assert remote.chrony_command() == ["chronyc", "-n", "-h", "ntp1", "-c", "tracking"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"source": "ntpd"}, "source must be one of"),
        ({"chrony_address": "-m"}, "chrony_address"),
        ({"chrony_address": ""}, "chrony_address"),
        ({"command_timeout": 0.0}, "command_timeout"),
    ],
)
def test_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClockProbe.Options(**options)
