"""The gpu probe: for real without a GPU (nvidia-ml-py installed, no NVIDIA driver, as here,
or no nvidia-ml-py at all), and with GPUs injected below the real pynvml binding: a fake
libnvidia-ml that answers pynvml's C calls, so pynvml's own code (structures, return codes,
exceptions, str/bytes handling) runs unchanged between the probe and the "driver"."""

import ctypes
import math
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from probes.base import Sample
from probes.gpu import GpuProbe

try:
    import pynvml
except ImportError:  # the tests that hide it still run
    pynvml = None

needs_pynvml = pytest.mark.skipif(pynvml is None, reason="nvidia-ml-py is not installed")

NOW = 1_700_000_000.0
SUCCESS, NOT_SUPPORTED, DRIVER_NOT_LOADED, TIMEOUT, GPU_IS_LOST = 0, 3, 9, 10, 15
XID_CRITICAL = 8  # nvmlEventTypeXidCriticalError


def probe() -> GpuProbe:
    return GpuProbe("gpus", GpuProbe.Options())


def by_gpu(samples: list[Sample]) -> dict[str, dict[str, Sample]]:
    gpus: dict[str, dict[str, Sample]] = {}
    for sample in samples:
        gpus.setdefault(sample.labels.get("gpu", ""), {})[sample.metric] = sample
    return gpus


# --- no GPU: the real thing on this machine ----------------------------------------------------


@needs_pynvml
def test_without_the_nvidia_driver_nvml_reports_why() -> None:
    [sample] = probe().collect(NOW)
    assert (sample.metric, sample.value, sample.labels) == ("gpu_up", 0.0, {})
    # nvidia-ml-py's own error for a missing libnvidia-ml.so.1
    assert sample.error == (
        "NVML not available: NVML Shared Library Not Found; install and load the NVIDIA driver"
    )


def test_without_nvidia_ml_py_the_probe_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    [sample] = probe().collect(NOW)
    assert sample.value == 0.0
    assert sample.error == "NVML not available: install nvidia-ml-py and the NVIDIA driver"


def test_without_nvml_the_watcher_waits_quietly() -> None:
    stop = threading.Event()
    stop.set()
    probe().watch(lambda samples: pytest.fail("nothing to report"), stop)  # returns at once


def test_nvml_is_imported_only_when_the_probe_runs() -> None:
    code = (
        "import sys, probes; from probes.gpu import GpuProbe; GpuProbe('g', GpuProbe.Options()); "
        "assert 'pynvml' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- GPUs injected below pynvml ----------------------------------------------------------------


@dataclass
class FakeGpu:
    name: bytes
    temperature: int
    memory_used: int
    memory_total: int
    utilization: int
    ecc_uncorrected: int | None  # None: the GPU has no ECC (NVML says Not Supported)
    lost: bool = False


def _index(handle: Any) -> int:
    return int(ctypes.cast(handle, ctypes.c_void_p).value or 0) - 1


def _handle_of(index: int) -> Any:
    return ctypes.cast(ctypes.c_void_p(index + 1), pynvml.c_nvmlDevice_t)


class FakeLibnvml:
    """libnvidia-ml.so.1 as pynvml calls it: each C function takes ctypes arguments, writes
    its results through the pointers it is given and returns an NVML return code."""

    def __init__(self, gpus: list[FakeGpu]) -> None:
        self.gpus = gpus
        self.init_result = SUCCESS
        self.users = 0
        self.registered: list[tuple[int, int]] = []
        self.freed = 0
        self.xids: queue.Queue[tuple[int, int]] = queue.Queue()
        self.all_registered = threading.Event()

    def nvmlInitWithFlags(self, flags: int) -> int:
        self.users += self.init_result == SUCCESS
        return self.init_result

    def nvmlShutdown(self) -> int:
        self.users -= 1
        return SUCCESS

    def nvmlDeviceGetCount_v2(self, count: Any) -> int:
        count._obj.value = len(self.gpus)
        return SUCCESS

    def nvmlDeviceGetHandleByIndex_v2(self, index: Any, handle: Any) -> int:
        if index.value >= len(self.gpus):
            return 2  # Invalid Argument
        pointer = ctypes.c_void_p(index.value + 1)
        ctypes.memmove(ctypes.addressof(handle._obj), ctypes.addressof(pointer), 8)
        return SUCCESS

    def nvmlDeviceGetName(self, handle: Any, name: Any, size: Any) -> int:
        name.value = self.gpus[_index(handle)].name
        return SUCCESS

    def _gpu(self, handle: Any) -> FakeGpu | None:
        gpu = self.gpus[_index(handle)]
        return None if gpu.lost else gpu

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: Any, temperature: Any) -> int:
        if (gpu := self._gpu(handle)) is None:
            return GPU_IS_LOST
        temperature._obj.value = gpu.temperature
        return SUCCESS

    def nvmlDeviceGetMemoryInfo(self, handle: Any, memory: Any) -> int:
        if (gpu := self._gpu(handle)) is None:
            return GPU_IS_LOST
        memory._obj.used, memory._obj.total = gpu.memory_used, gpu.memory_total
        memory._obj.free = gpu.memory_total - gpu.memory_used
        return SUCCESS

    def nvmlDeviceGetUtilizationRates(self, handle: Any, rates: Any) -> int:
        if (gpu := self._gpu(handle)) is None:
            return GPU_IS_LOST
        rates._obj.gpu, rates._obj.memory = gpu.utilization, 0
        return SUCCESS

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, kind: Any, counter: Any, count: Any) -> int:
        if (gpu := self._gpu(handle)) is None:
            return GPU_IS_LOST
        assert (kind.value, counter.value) == (1, 0)  # uncorrected, volatile
        if gpu.ecc_uncorrected is None:
            return NOT_SUPPORTED
        count._obj.value = gpu.ecc_uncorrected
        return SUCCESS

    def nvmlEventSetCreate(self, event_set: Any) -> int:
        return SUCCESS

    def nvmlDeviceRegisterEvents(self, handle: Any, types: Any, event_set: Any) -> int:
        self.registered.append((_index(handle), types.value))
        if len(self.registered) == len(self.gpus):
            self.all_registered.set()
        return SUCCESS

    def nvmlEventSetWait_v2(self, event_set: Any, data: Any, timeout_ms: Any) -> int:
        try:
            index, xid = self.xids.get(timeout=timeout_ms.value / 1000)
        except queue.Empty:
            return TIMEOUT
        data._obj.device, data._obj.eventType = _handle_of(index), XID_CRITICAL
        data._obj.eventData = xid
        return SUCCESS

    def nvmlDeviceGetIndex(self, handle: Any, index: Any) -> int:
        index._obj.value = _index(handle)
        return SUCCESS

    def nvmlEventSetFree(self, event_set: Any) -> int:
        self.freed += 1
        return SUCCESS


A100 = FakeGpu(b"NVIDIA A100-SXM4-40GB", 41, 8 * 2**30, 40 * 2**30, 87, ecc_uncorrected=0)
RTX = FakeGpu(b"NVIDIA GeForce RTX 3090", 66, 2**30, 24 * 2**30, 12, ecc_uncorrected=None)


@pytest.fixture
def driver(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLibnvml]:
    if pynvml is None:
        pytest.skip("nvidia-ml-py is not installed")
    library = FakeLibnvml([A100, RTX])
    monkeypatch.setattr(pynvml, "nvmlLib", library)
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
    yield library
    assert library.users == 0, "every nvmlInit needs its nvmlShutdown"


def test_each_gpu_reports_temperature_memory_utilisation_and_ecc(driver: FakeLibnvml) -> None:
    samples = probe().collect(NOW)
    gpus = by_gpu(samples)
    assert {m: s.value for m, s in gpus[""].items()} == {"gpu_up": 1.0, "gpu_count": 2.0}
    assert {m: s.value for m, s in gpus["0"].items()} == {
        "gpu_up": 1.0,
        "gpu_temperature_celsius": 41.0,
        "gpu_memory_used_bytes": 8.0 * 2**30,
        "gpu_memory_total_bytes": 40.0 * 2**30,
        "gpu_utilization_percent": 87.0,
        "gpu_ecc_errors_uncorrected_total": 0.0,
    }
    assert gpus["0"]["gpu_up"].labels == {"gpu": "0", "name": "NVIDIA A100-SXM4-40GB"}
    assert all(s.error is None and s.timestamp == NOW for s in samples)


def test_a_gpu_without_ecc_leaves_the_ecc_count_out(driver: FakeLibnvml) -> None:
    rtx = by_gpu(probe().collect(NOW))["1"]
    assert "gpu_ecc_errors_uncorrected_total" not in rtx
    assert rtx["gpu_up"].value == 1.0 and rtx["gpu_up"].error is None
    assert rtx["gpu_temperature_celsius"].labels["name"] == "NVIDIA GeForce RTX 3090"


def test_a_lost_gpu_is_down_and_the_others_still_report(driver: FakeLibnvml) -> None:
    driver.gpus[1] = FakeGpu(**{**RTX.__dict__, "lost": True})
    gpus = by_gpu(probe().collect(NOW))
    lost = gpus["1"]
    assert lost["gpu_up"].value == 0.0 and lost["gpu_up"].error == "GPU is lost"
    assert math.isnan(lost["gpu_temperature_celsius"].value)
    assert lost["gpu_temperature_celsius"].error == "GPU is lost"
    assert gpus["0"]["gpu_up"].value == 1.0 and gpus[""]["gpu_up"].value == 1.0


def test_a_driver_that_is_not_loaded_is_reported(driver: FakeLibnvml) -> None:
    driver.init_result = DRIVER_NOT_LOADED
    [sample] = probe().collect(NOW)
    assert sample.value == 0.0
    assert sample.error == (
        "NVML not available: Driver Not Loaded; install and load the NVIDIA driver"
    )


def test_an_xid_error_is_reported_the_moment_it_happens(driver: FakeLibnvml) -> None:
    gpus = probe()
    assert not any(s.metric.startswith("gpu_xid") for s in gpus.collect(NOW)), "not watched yet"
    emitted: queue.Queue[list[Sample]] = queue.Queue()
    stop = threading.Event()
    watcher = threading.Thread(target=gpus.watch, args=(emitted.put, stop), daemon=True)
    watcher.start()
    try:
        assert driver.all_registered.wait(5)
        assert driver.registered == [(0, XID_CRITICAL), (1, XID_CRITICAL)]
        driver.xids.put((1, 79))  # Xid 79: GPU has fallen off the bus
        event = {s.metric: s for s in emitted.get(timeout=5)}
        assert event["gpu_xid_last"].value == 79.0 and event["gpu_xid_errors_total"].value == 1.0
        assert event["gpu_xid_last"].labels == {"gpu": "1", "name": "NVIDIA GeForce RTX 3090"}

        first_run = by_gpu(gpus.collect(NOW))
        assert first_run["1"]["gpu_xid_last"].value == 79.0  # seen since the previous run
        assert first_run["0"]["gpu_xid_last"].value == 0.0
        assert first_run["0"]["gpu_xid_errors_total"].value == 0.0
        second_run = by_gpu(gpus.collect(NOW))
        assert second_run["1"]["gpu_xid_last"].value == 0.0
        assert second_run["1"]["gpu_xid_errors_total"].value == 1.0
    finally:
        stop.set()
        watcher.join(5)
    assert not watcher.is_alive(), "the watcher must notice stop within its wait"
    assert driver.freed == 1
