#!/bin/bash
# Captures real `systemctl` outputs for tests/data/systemd/ on a machine without systemd as
# PID 1: a systemd user manager runs in a private mount namespace, where a tmpfs over
# /run/systemd makes it (and systemctl) believe the system was booted with systemd. Nothing
# outside the namespace changes. Needs root (for unshare -m), systemd and util-linux.
# Usage: sudo bash capture.sh OUTPUT_DIRECTORY
set -euo pipefail
out=$(realpath "${1:?usage: capture.sh OUTPUT_DIRECTORY}")
runtime=$(mktemp -d)
trap 'rm -rf "$runtime"' EXIT

inside() {
    set -euo pipefail
    mount -t tmpfs tmpfs /run/systemd
    mkdir -p /run/systemd/system /run/systemd/capture-units
    cd /run/systemd/capture-units
    unit() { printf '%s\n' "$2" > "$1"; }
    unit default.target $'[Unit]\nDescription=capture default target'
    unit fw-ok.service $'[Unit]\nDefaultDependencies=no\nDescription=a service that keeps running\n[Service]\nExecStart=/bin/sleep 1000'
    unit fw-fail.service $'[Unit]\nDefaultDependencies=no\nDescription=a service whose main process exits with status 3\n[Service]\nExecStart=/bin/sh -c \'exit 3\''
    unit fw-loop.service $'[Unit]\nDefaultDependencies=no\nDescription=a service that crashes and is restarted\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sh -c \'exit 1\'\nRestart=always\nRestartSec=2'
    unit fw-killed.service $'[Unit]\nDefaultDependencies=no\nDescription=a service killed by a signal\n[Service]\nExecStart=/bin/sleep 1000'
    unit fw-stopped.service $'[Unit]\nDefaultDependencies=no\nDescription=a service stopped by hand\n[Service]\nExecStart=/bin/sleep 1000'
    unit fw-tick.timer $'[Unit]\nDefaultDependencies=no\nDescription=a timer\n[Timer]\nOnActiveSec=1h'
    unit fw-tick.service $'[Unit]\nDefaultDependencies=no\nDescription=the timer\'s job\n[Service]\nType=oneshot\nExecStart=/bin/true'
    unit fw-broken.service $'[Unit]\nDefaultDependencies=no\nDescription=a service without ExecStart\n[Service]\nType=simple'
    ln -s /dev/null fw-masked.service
    export XDG_RUNTIME_DIR=$runtime SYSTEMD_UNIT_PATH=/run/systemd/capture-units
    /lib/systemd/systemd --user >/dev/null 2>&1 &
    manager=$!
    sleep 1.5
    systemctl --user start fw-ok.service fw-loop.service fw-killed.service fw-stopped.service fw-tick.timer
    systemctl --user start fw-fail.service || true
    systemctl --user stop fw-stopped.service
    systemctl --user kill --signal=KILL fw-killed.service
    sleep 5  # fw-loop crashes and is restarted twice meanwhile
    properties=Id,LoadState,ActiveState,SubState,Result,NRestarts,ExecMainCode,ExecMainStatus,ActiveEnterTimestampMonotonic,StateChangeTimestampMonotonic
    systemctl --user show --property=$properties -- fw-ok.service fw-fail.service \
        fw-loop.service fw-killed.service fw-stopped.service fw-tick.timer no-such-unit.service \
        fw-masked.service fw-broken.service \
        > "$out/show-properties.txt"
    systemctl --user show fw-loop.service > "$out/show-all-crash-loop.txt"
    systemctl --user list-units --all --plain --no-legend --full 'fw-*' > "$out/list-units.txt"
    systemctl --version | head -1 > "$out/systemd-version.txt"
    systemctl --user stop fw-ok.service fw-loop.service fw-tick.timer
    kill -9 "$manager"
}
export -f inside
export out runtime
unshare --mount --propagation private bash -c inside
