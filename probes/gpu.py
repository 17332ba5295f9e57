"""NVIDIA GPUs through NVML: temperature, memory, utilisation, ECC errors and Xid errors.

NVML comes with the NVIDIA driver; Python reaches it through the `pynvml` module of the
nvidia-ml-py package, imported only when the probe runs, never with this module. Without
the module, or when NVML cannot start (no driver, driver not loaded, no GPU), every run
reports `gpu_up` 0 with the reason, e.g. "NVML not available: install nvidia-ml-py and the
NVIDIA driver" or "NVML not available: Driver Not Loaded". It never raises.

Xid errors (the driver's reports of GPU faults: 79 "fallen off the bus", 48 "double bit ECC
error", 13/31/43 application faults...) are events: the probe watches for them between runs
(NVML event sets, critical Xid events) and reports each one the moment it comes.

Options: none.

Metrics, without labels:
    gpu_up                            1 when NVML answered, 0 (with the error) when not
    gpu_count                         GPUs NVML lists
and per GPU, labelled {gpu, name} (gpu is NVML's index, "0", "1"...; name e.g.
"NVIDIA A100-SXM4-40GB"):
    gpu_up                            1 when the GPU answered every query it supports, 0
                                      with the first error (e.g. "GPU is lost")
    gpu_temperature_celsius           core temperature
    gpu_memory_used_bytes             frame buffer memory in use
    gpu_memory_total_bytes            frame buffer memory installed
    gpu_utilization_percent           share of the last sample period a kernel was running
    gpu_ecc_errors_uncorrected_total  uncorrected ECC errors since the driver loaded
                                      (volatile count; left out on GPUs without ECC)
    gpu_xid_errors_total              Xid errors seen since forewarn started watching
    gpu_xid_last                      code of the last Xid error seen since the previous run,
                                      0 when none; sent at once when an Xid error happens
The two Xid metrics are reported only for GPUs being watched (by the daemon, not by a
one-off `forewarn check`). A query a GPU does not support is left out, not an error.

Example:

    [[probe]]
    name = "gpus"
    kind = "gpu"
    interval = "1m"
"""

import importlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from probes.base import Emit, NoOptions, Sample, UnconfiguredProbe

log = logging.getLogger(__name__)

UP = "gpu_up"
COUNT = "gpu_count"
TEMPERATURE = "gpu_temperature_celsius"
MEMORY_USED = "gpu_memory_used_bytes"
MEMORY_TOTAL = "gpu_memory_total_bytes"
UTILIZATION = "gpu_utilization_percent"
ECC_UNCORRECTED = "gpu_ecc_errors_uncorrected_total"
XID_TOTAL = "gpu_xid_errors_total"
XID_LAST = "gpu_xid_last"

NOT_INSTALLED = "NVML not available: install nvidia-ml-py and the NVIDIA driver"
NO_DRIVER = ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded")
WAIT_MILLISECONDS = 500  # how often the watcher looks at its stop event
UNAVAILABLE_PAUSE = 60.0  # seconds before the watcher tries NVML again


class NvmlUnavailable(Exception):
    """NVML cannot be used here; the message says why."""


@contextmanager
def nvml_session() -> Iterator[Any]:
    """The pynvml module, initialised for the duration of the block (NVML counts its users)."""
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError:
        raise NvmlUnavailable(NOT_INSTALLED) from None
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        hint = "; install and load the NVIDIA driver" if type(exc).__name__ in NO_DRIVER else ""
        raise NvmlUnavailable(f"NVML not available: {exc}{hint}") from None
    try:
        yield nvml
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            log.debug("NVML shutdown failed: %s", exc)


def _text(value: str | bytes) -> str:
    """GPU names: str from nvidia-ml-py 11.515 on, bytes before."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _temperature(nvml: Any, handle: Any) -> dict[str, float]:
    return {TEMPERATURE: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))}


def _memory(nvml: Any, handle: Any) -> dict[str, float]:
    info = nvml.nvmlDeviceGetMemoryInfo(handle)
    return {MEMORY_USED: float(info.used), MEMORY_TOTAL: float(info.total)}


def _utilization(nvml: Any, handle: Any) -> dict[str, float]:
    return {UTILIZATION: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)}


def _ecc(nvml: Any, handle: Any) -> dict[str, float]:
    count = nvml.nvmlDeviceGetTotalEccErrors(
        handle, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC
    )
    return {ECC_UNCORRECTED: float(count)}


Reader = Callable[[Any, Any], dict[str, float]]
READERS: tuple[tuple[tuple[str, ...], Reader], ...] = (
    ((TEMPERATURE,), _temperature),
    ((MEMORY_USED, MEMORY_TOTAL), _memory),
    ((UTILIZATION,), _utilization),
    ((ECC_UNCORRECTED,), _ecc),
)


def gpu_labels(nvml: Any, index: int) -> tuple[Any, dict[str, str]]:
    """(handle, labels) of the GPU at `index`; raises NVMLError."""
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    return handle, {"gpu": str(index), "name": _text(nvml.nvmlDeviceGetName(handle))}


def measured(nvml: Any, handle: Any) -> tuple[dict[str, float], dict[str, str]]:
    """(values, errors by metric) of every query the GPU supports."""
    values: dict[str, float] = {}
    errors: dict[str, str] = {}
    for metrics, read in READERS:
        try:
            values.update(read(nvml, handle))
        except nvml.NVMLError_NotSupported:
            continue
        except nvml.NVMLError as exc:
            errors.update(dict.fromkeys(metrics, str(exc)))
    return values, errors


def gpu_samples(nvml: Any, index: int, now: float) -> list[Sample]:
    try:
        handle, labels = gpu_labels(nvml, index)
    except nvml.NVMLError as exc:
        return [Sample(UP, 0.0, now, {"gpu": str(index), "name": ""}, str(exc))]
    values, errors = measured(nvml, handle)
    first_error = next(iter(errors.values()), None)
    samples = [Sample(UP, 0.0 if first_error else 1.0, now, labels, first_error)]
    samples += [Sample(metric, value, now, labels) for metric, value in values.items()]
    samples += [Sample(metric, math.nan, now, labels, error) for metric, error in errors.items()]
    return samples


class XidLog:
    """Xid errors seen by the watcher, for the scheduled runs to report too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._labels: dict[str, dict[str, str]] = {}  # the watched GPUs, by index
        self._total: dict[str, int] = {}
        self._last: dict[str, int] = {}  # since the previous run

    def watching(self, labels: list[dict[str, str]]) -> None:
        with self._lock:
            self._labels = {entry["gpu"]: entry for entry in labels}
            for gpu in self._labels:
                self._total.setdefault(gpu, 0)

    def record(self, gpu: str, xid: int, now: float) -> list[Sample]:
        with self._lock:
            self._total[gpu] = self._total.get(gpu, 0) + 1
            self._last[gpu] = xid
            return self._samples_of(gpu, now)

    def report(self, now: float) -> list[Sample]:
        """Every watched GPU's Xid samples; the "last" codes start again from 0."""
        with self._lock:
            samples = [s for gpu in self._labels for s in self._samples_of(gpu, now)]
            self._last.clear()
            return samples

    def _samples_of(self, gpu: str, now: float) -> list[Sample]:
        labels = self._labels.get(gpu, {"gpu": gpu, "name": ""})
        return [
            Sample(XID_TOTAL, float(self._total.get(gpu, 0)), now, labels),
            Sample(XID_LAST, float(self._last.get(gpu, 0)), now, labels),
        ]


class GpuProbe(UnconfiguredProbe):
    kind: ClassVar[str] = "gpu"

    def __init__(self, name: str, options: NoOptions) -> None:
        super().__init__(name, options)
        self.xids = XidLog()

    def collect(self, now: float) -> list[Sample]:
        try:
            with nvml_session() as nvml:
                return self._collect_from(nvml, now) + self.xids.report(now)
        except NvmlUnavailable as exc:
            return [Sample(UP, 0.0, now, {}, str(exc))]

    def _collect_from(self, nvml: Any, now: float) -> list[Sample]:
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            return [Sample(UP, 0.0, now, {}, f"NVML error: {exc}")]
        samples = [Sample(UP, 1.0, now, {}), Sample(COUNT, float(count), now, {})]
        for index in range(count):
            samples.extend(gpu_samples(nvml, index, now))
        return samples

    def watch(self, emit: Emit, stop: threading.Event) -> None:
        """Report each critical Xid error the moment NVML hands it over."""
        try:
            with nvml_session() as nvml:
                self._watch_with(nvml, emit, stop)
        except NvmlUnavailable as exc:
            log.debug("not watching for Xid errors: %s", exc)
            stop.wait(UNAVAILABLE_PAUSE)

    def _watch_with(self, nvml: Any, emit: Emit, stop: threading.Event) -> None:
        try:
            events = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as exc:
            log.info("not watching for Xid errors: %s", exc)
            stop.wait()
            return
        try:
            if not self._register(nvml, events):
                stop.wait()  # no GPU reports Xid events: nothing to watch
            while not stop.is_set():
                self._wait_for_xid(nvml, events, emit)
        finally:
            nvml.nvmlEventSetFree(events)

    def _register(self, nvml: Any, events: Any) -> bool:
        """Ask for the critical Xid events of every GPU that has them."""
        watched: list[dict[str, str]] = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            try:
                handle, labels = gpu_labels(nvml, index)
                nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, events)
            except nvml.NVMLError as exc:
                log.info("GPU %d: not watching for Xid errors: %s", index, exc)
                continue
            watched.append(labels)
        self.xids.watching(watched)
        return bool(watched)

    def _wait_for_xid(self, nvml: Any, events: Any, emit: Emit) -> None:
        try:
            event = nvml.nvmlEventSetWait_v2(events, WAIT_MILLISECONDS)
        except nvml.NVMLError_Timeout:
            return
        if event.eventType != nvml.nvmlEventTypeXidCriticalError:
            return
        gpu = str(nvml.nvmlDeviceGetIndex(event.device))
        log.warning("GPU %s reported Xid error %d", gpu, event.eventData)
        emit(self.xids.record(gpu, int(event.eventData), time.time()))
