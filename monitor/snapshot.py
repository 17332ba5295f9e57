"""A diagnostic snapshot taken when an incident opens, for the agent who picks up the ticket."""

from __future__ import annotations

import logging
from typing import Any

import psutil

log = logging.getLogger(__name__)

_PROCESS_FIELDS = ["pid", "name", "memory_percent", "cpu_times", "username"]


def take_snapshot(top: int = 5) -> dict[str, Any]:
    """Top processes by memory and by CPU time, and the fullest filesystems."""
    try:
        return {"top_processes": _top_processes(top), "filesystems": _filesystems(top)}
    except Exception as exc:  # a snapshot is a courtesy: never let it block a ticket
        log.warning("diagnostic snapshot failed: %s", exc)
        return {}


def _top_processes(top: int) -> list[dict[str, Any]]:
    procs = []
    for proc in psutil.process_iter(_PROCESS_FIELDS):
        info = proc.info
        times = info.get("cpu_times")
        procs.append(
            {
                "pid": info["pid"],
                "name": info.get("name") or "?",
                "user": info.get("username") or "?",
                "memory_percent": round(info.get("memory_percent") or 0.0, 1),
                "cpu_seconds": round(times.user + times.system, 1) if times else 0.0,
            }
        )
    by_memory = sorted(procs, key=lambda p: p["memory_percent"], reverse=True)[:top]
    by_cpu = sorted(procs, key=lambda p: p["cpu_seconds"], reverse=True)[:top]
    seen = {p["pid"] for p in by_memory}
    return by_memory + [p for p in by_cpu if p["pid"] not in seen]


def _filesystems(top: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for part in psutil.disk_partitions(all=False):
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        rows.append({"mountpoint": part.mountpoint, "used_percent": usage.percent})
    return sorted(rows, key=lambda r: r["used_percent"], reverse=True)[:top]
