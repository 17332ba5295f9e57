"""Space and inode use of every real filesystem, or of the mount points the config names.

Pseudo filesystems (proc, tmpfs, cgroup, squashfs images that are full by design, ...) are
skipped. `psutil.disk_partitions(all=False)` is not used to find real ones because it also
drops `overlay` (the root of a container) and network filesystems (an NFS share filling up
is worth a ticket). Each mount is asked in its own daemon thread, so one hung NFS mount
becomes an error sample for that mount point while the others are still reported.
"""

import fnmatch
import logging
import math
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import ClassVar

import psutil

from probes.base import Duration, Sample

log = logging.getLogger(__name__)

USED_PERCENT = "disk_used_percent"
FREE_BYTES = "disk_free_bytes"
TOTAL_BYTES = "disk_total_bytes"
INODES_USED_PERCENT = "disk_inodes_used_percent"
DEFAULT_STAT_TIMEOUT = Duration(2)

# fnmatch patterns. Read-only images (squashfs, erofs, iso9660, udf) are always 100 % full,
# and the FUSE types listed are desktop or container helpers, not storage.
PSEUDO_FSTYPES = (
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devfs",
    "devpts", "devtmpfs", "efivarfs", "erofs", "fusectl", "hugetlbfs", "iso9660", "mqueue",
    "nfsd", "nsfs", "proc", "procfs", "pstore", "ramfs", "rpc_pipefs", "securityfs",
    "selinuxfs", "squashfs", "sysfs", "tmpfs", "tracefs", "udf",
    "fuse.gvfsd-fuse", "fuse.lxcfs", "fuse.portal", "fuse.snapfuse",
    "fuse.xdg-document-portal",
)  # fmt: skip

# After node_exporter's default: kernel trees, per-user mounts, and the layers and volumes
# that container runtimes mount for each container (they repeat the host's filesystem).
PSEUDO_MOUNTPOINTS = re.compile(
    r"^/(dev|proc|sys|snap/.+|run/credentials/.+|run/user/.+|run/containerd/.+"
    r"|var/lib/docker/.+|var/lib/containers/storage/.+|var/lib/kubelet/.+)($|/)"
)


@dataclass(frozen=True)
class Mount:
    mountpoint: str
    device: str
    fstype: str

    @property
    def labels(self) -> dict[str, str]:
        return {"mountpoint": self.mountpoint, "device": self.device, "fstype": self.fstype}

    @property
    def filesystem_key(self) -> str:
        """Equal for bind mounts of one filesystem. Placeholder devices ("overlay", "")
        name no filesystem, so those mounts stay apart."""
        if self.device.startswith("/") or ":" in self.device:
            return self.device
        return f"mountpoint {self.mountpoint}"


def _mount_table() -> list[Mount]:
    return [
        Mount(part.mountpoint, part.device, part.fstype)
        for part in psutil.disk_partitions(all=True)
    ]


def is_pseudo(mount: Mount, exclude_fstypes: list[str]) -> bool:
    patterns = (*PSEUDO_FSTYPES, *exclude_fstypes)
    if any(fnmatch.fnmatchcase(mount.fstype, pattern) for pattern in patterns):
        return True
    return PSEUDO_MOUNTPOINTS.match(mount.mountpoint) is not None


def discover_mounts(exclude_fstypes: list[str]) -> list[Mount]:
    """The real mounts that are visible: a later mount on the same point hides the earlier."""
    visible: dict[str, Mount] = {}
    for mount in _mount_table():
        visible.pop(mount.mountpoint, None)
        if not is_pseudo(mount, exclude_fstypes):
            visible[mount.mountpoint] = mount
    return list(visible.values())


def find_mounts(mountpoints: list[str]) -> tuple[list[Mount], list[str]]:
    """The named mount points that are mounted, and those that are not."""
    table = {os.path.normpath(mount.mountpoint): mount for mount in _mount_table()}
    wanted = [os.path.normpath(path) for path in mountpoints]
    return [table[path] for path in wanted if path in table], [
        path for path in wanted if path not in table
    ]


class StatvfsCall:
    """`os.statvfs` of one mount point in a daemon thread: a hard NFS mount whose server is
    gone blocks the calling thread for good, and must not block the probe with it."""

    def __init__(self, mount: Mount) -> None:
        self.mount = mount
        self.started = time.monotonic()
        self.result: os.statvfs_result | None = None
        self.is_directory = True
        self.error: str | None = None
        self.done = threading.Event()
        name = f"statvfs {mount.mountpoint}"
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        try:
            # Container runtimes bind-mount single files (/etc/hosts): not a filesystem of
            # its own, so discovery skips them.
            self.is_directory = stat.S_ISDIR(os.stat(self.mount.mountpoint).st_mode)
            self.result = os.statvfs(self.mount.mountpoint)
        except OSError as exc:
            self.error = f"statvfs failed: {exc.strerror or exc}"
        finally:
            self.done.set()

    def outcome_error(self) -> str | None:
        if not self.done.is_set():
            waited = time.monotonic() - self.started
            return f"no answer from the filesystem for {waited:.0f}s"
        return self.error


def _percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole > 0 else 0.0


def usage_samples(mount: Mount, result: os.statvfs_result, now: float) -> list[Sample]:
    labels = mount.labels
    used = (result.f_blocks - result.f_bfree) * result.f_frsize
    free = result.f_bavail * result.f_frsize
    # As df does: blocks reserved for root are neither used nor available to users.
    samples = [
        Sample(USED_PERCENT, _percent(used, used + free), now, labels),
        Sample(FREE_BYTES, float(free), now, labels),
        Sample(TOTAL_BYTES, float(result.f_blocks * result.f_frsize), now, labels),
    ]
    if result.f_files > 0:  # btrfs and others have no fixed inode table
        inodes_used = result.f_files - result.f_ffree
        samples.append(
            Sample(INODES_USED_PERCENT, _percent(inodes_used, result.f_files), now, labels)
        )
    return samples


def error_sample(mount: Mount, error: str, now: float) -> Sample:
    return Sample(USED_PERCENT, math.nan, now, mount.labels, error)


def one_per_filesystem(calls: list[StatvfsCall]) -> list[StatvfsCall]:
    """Keep one mount of each filesystem: the one that answered, with the shortest path."""
    ranked = sorted(calls, key=lambda c: (c.outcome_error() is not None, len(c.mount.mountpoint)))
    kept: dict[str, StatvfsCall] = {}
    for call in ranked:
        kept.setdefault(call.mount.filesystem_key, call)
    return sorted(kept.values(), key=lambda c: c.mount.mountpoint)


class DiskProbe:
    kind: ClassVar[str] = "disk"

    @dataclass(frozen=True)
    class Options:
        """`mountpoints`: watch exactly these (whatever their type; one that is not mounted
        yields an error sample); empty watches every real filesystem. `exclude_fstypes`:
        more types (fnmatch patterns such as `fuse.*`) to skip when watching all.
        `stat_timeout`: how long all filesystems together may take to answer; it must stay
        below the probe's `timeout`, so that a hung mount is reported by this probe."""

        mountpoints: list[str] = field(default_factory=list)
        exclude_fstypes: list[str] = field(default_factory=list)
        stat_timeout: Duration = DEFAULT_STAT_TIMEOUT

        def __post_init__(self) -> None:
            relative = [path for path in self.mountpoints if not os.path.isabs(path)]
            if relative:
                raise ValueError(f"mountpoints must be absolute paths: {', '.join(relative)}")
            if self.stat_timeout <= 0:
                raise ValueError("stat_timeout must be more than 0s")

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self._pending: dict[str, StatvfsCall] = {}

    def collect(self, now: float) -> list[Sample]:
        if self.options.mountpoints:
            mounts, missing = find_mounts(self.options.mountpoints)
            calls = self._wait(mounts)
        else:
            missing = []
            found = self._wait(discover_mounts(self.options.exclude_fstypes))
            calls = one_per_filesystem([call for call in found if call.is_directory])
        samples = [error_sample(Mount(path, "", ""), "not mounted", now) for path in missing]
        for call in calls:
            samples.extend(self._samples(call, now))
        return samples

    def _wait(self, mounts: list[Mount]) -> list[StatvfsCall]:
        begun = time.monotonic()
        calls = [self._start(mount) for mount in mounts]
        deadline = begun + self.options.stat_timeout
        # A call still hung from an earlier collection had its chance: no waiting again.
        for call in (call for call in calls if call.started >= begun):
            call.done.wait(max(0.0, deadline - time.monotonic()))
        self._pending = {c.mount.mountpoint: c for c in calls if not c.done.is_set()}
        return calls

    def _start(self, mount: Mount) -> StatvfsCall:
        # A mount still hung is not asked again: one stuck thread per mount point at most.
        pending = self._pending.get(mount.mountpoint)
        if pending is not None and not pending.done.is_set():
            return pending
        return StatvfsCall(mount)

    def _samples(self, call: StatvfsCall, now: float) -> list[Sample]:
        error = call.outcome_error()
        if error is not None or call.result is None:
            log.debug("disk %s: %s", call.mount.mountpoint, error)
            return [error_sample(call.mount, error or "no result", now)]
        return usage_samples(call.mount, call.result, now)
