"""The `forewarn` command line: run the daemon, check this machine once, validate a config,
list tickets and incidents (also while the daemon runs: the state file is read through WAL)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from monitor import report, silence_cli, views
from monitor.config import Config, ConfigError, load_config

EXIT_OK = 0
EXIT_PROBLEM = 1  # `check` found a rule whose condition holds
EXIT_CONFIG = 2  # the config is invalid: nothing was started

SYSTEM_CONFIG = "/etc/forewarn/config.toml"

log = logging.getLogger("forewarn")


def find_config(explicit: str | None) -> str | None:
    """-c FILE, else $FOREWARN_CONFIG, else the system config when it exists, else built-in."""
    if explicit:
        return explicit
    for candidate in (
        os.environ.get("FOREWARN_CONFIG"),
        _in_dir(os.environ.get("CONFIGURATION_DIRECTORY")),  # set by systemd
        SYSTEM_CONFIG,
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _in_dir(directory: str | None) -> str | None:
    return str(Path(directory.split(":")[0]) / "config.toml") if directory else None


def load_or_report(path: str | None) -> Config | None:
    """The config, or None after printing every error to stderr."""
    try:
        return load_config(path)
    except ConfigError as exc:
        where = path or "the built-in default config"
        print(f"{where}: {len(exc.errors)} error(s)", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return None


# --- commands -----------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from monitor.daemon import Daemon
    from monitor.logs import config_secrets, setup_logging

    path = find_config(args.config)
    config = load_or_report(path)
    if config is None:
        return EXIT_CONFIG
    setup_logging(config.daemon.log_level, args.log_format, config_secrets(config))
    # APScheduler logs every job run at INFO: far too chatty for a daemon's journal.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    log.info("configuration: %s", path or "built-in default (no config file found)")
    try:
        daemon = Daemon(config, path)
        daemon.install_signal_handlers()
        return daemon.run()
    except (OSError, sqlite3.Error) as exc:  # state dir not writable, port in use, ...
        log.error("cannot start: %s", exc)
        return EXIT_PROBLEM


def cmd_validate(args: argparse.Namespace) -> int:
    path = args.file or find_config(args.config)
    config = load_or_report(path)
    if config is None:
        return EXIT_CONFIG
    print(
        f"{path or 'built-in default'}: OK, {len(config.probes)} probes, "
        f"{len(config.rules)} rules, help desk {config.helpdesk.kind}, "
        f"e-mail {'on' if config.smtp else 'off'}"
    )
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from monitor.check import run_check

    config = load_or_report(find_config(args.config))
    if config is None:
        return EXIT_CONFIG
    rows = run_check(config)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print(
            views.table(
                ["PROBE", "METRIC", "LABELS", "VALUE", "VERDICT"], [r.cells() for r in rows]
            )
        )
    failing = [r for r in rows if r.failing]
    if not args.json:
        print(f"\n{len(rows)} samples, {len(failing)} with a rule condition that holds")
    return EXIT_PROBLEM if failing else EXIT_OK


def cmd_tickets(args: argparse.Namespace) -> int:
    config = load_or_report(find_config(args.config))
    if config is None:
        return EXIT_CONFIG
    return views.tickets(config, args)


def cmd_incidents(args: argparse.Namespace) -> int:
    config = load_or_report(find_config(args.config))
    if config is None:
        return EXIT_CONFIG
    return views.incidents(config, args)


def cmd_report(args: argparse.Namespace) -> int:
    from monitor.daemon import state_path

    config = load_or_report(find_config(args.config))
    if config is None:
        return EXIT_CONFIG
    path = state_path(config)
    if not path.exists():
        raise views.CliError(f"no state yet at {path}: has the daemon run?")
    try:
        return report.run(config.rules, path, args)
    except ValueError as exc:
        raise views.CliError(str(exc)) from None


def cmd_silences(args: argparse.Namespace) -> int:
    config = load_or_report(find_config(args.config))
    if config is None:
        return EXIT_CONFIG
    return silence_cli.silences(config, args)


# --- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forewarn",
        description="Proactive monitoring that opens, updates and closes help-desk tickets.",
        epilog="Without -c, the config is $FOREWARN_CONFIG, else /etc/forewarn/config.toml, "
        "else a built-in default that watches this machine. Exit codes: 0 OK, 1 a problem "
        "was found (check), 2 invalid configuration.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_opt, json_opt = _options(suppress=False)

    run = sub.add_parser(
        "run",
        parents=[config_opt],
        help="run the daemon in the foreground",
        description="Run probes on schedule, open and resolve tickets, send "
        "mail. SIGHUP reloads the config (kept if invalid); SIGTERM stops.",
    )
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (default), or one JSON object per line for log shippers",
    )
    run.set_defaults(func=cmd_run)

    check = sub.add_parser(
        "check",
        parents=[config_opt, json_opt],
        help="run every probe once and show values and rule verdicts",
        description="Run every configured probe once and print each sample "
        "with the verdict of the rules on it. Exits 1 when a rule's "
        "condition holds (it would fire once held for its `for`).",
    )
    check.set_defaults(func=cmd_check)

    validate = sub.add_parser(
        "validate",
        parents=[config_opt],
        help="check a config file without starting anything",
        description="Load and validate a config; print every error "
        "with its path; exit 2 when there is any.",
    )
    validate.add_argument("file", nargs="?", help="config file (default: as for run)")
    validate.set_defaults(func=cmd_validate)

    # An action (`tickets show`) takes the options again, without defaults of its own, so
    # `tickets -c FILE show 1` and `tickets show 1 -c FILE` mean the same.
    action_opts = _options(suppress=True)
    views.add_ticket_commands(sub, [config_opt, json_opt], action_opts, cmd_tickets)
    views.add_incident_commands(sub, [config_opt, json_opt], action_opts, cmd_incidents)
    silence_cli.add_commands(sub, [config_opt, json_opt], action_opts, cmd_silences)
    report.add_command(sub, [config_opt, json_opt], cmd_report)
    return parser


def _options(*, suppress: bool) -> list[argparse.ArgumentParser]:
    """The shared -c and --json options; with `suppress`, unset ones leave no default."""
    config_opt = argparse.ArgumentParser(add_help=False)
    json_opt = argparse.ArgumentParser(add_help=False)
    if suppress:
        config_opt.add_argument("-c", "--config", default=argparse.SUPPRESS, help="config file")
        json_opt.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="JSON output"
        )
    else:
        config_opt.add_argument("-c", "--config", metavar="FILE", help="config file (TOML)")
        json_opt.add_argument("--json", action="store_true", help="machine-readable JSON output")
    return [config_opt, json_opt]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except views.CliError as exc:
        print(f"forewarn: {exc}", file=sys.stderr)
        return EXIT_PROBLEM


if __name__ == "__main__":
    sys.exit(main())
