"""Config loading and validation: the shipped configs load, and every broken one says where."""

from __future__ import annotations

import dataclasses
import math
import socket
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from monitor.comms_config import AudienceConfig, NoticesConfig, ServiceConfig, StatusConfig
from monitor.config import (
    BUILTIN_RULES,
    DELIVERY_FAILED_RULE,
    PROBE_STALE_RULE,
    Config,
    ConfigError,
    DaemonConfig,
    HelpdeskConfig,
    NotifyConfig,
    ProbeConfig,
    RouteConfig,
    SmtpConfig,
    build_options,
    load_config,
    parse_config,
    stale_after,
)
from monitor.durations import format_duration, parse_duration
from notifiers.email import SmtpSettings
from probes.base import Duration, Sample
from rules.alerts import evaluate, render_summary
from rules.model import AlertState, Phase, Rule, Severity, TransitionKind
from rules.silences import Matcher, MatchOp, window_active

REPO = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).resolve().parent / "data" / "configs"
DURATION_HINT = "is not a duration; use 30s, 5m, 4h or 1d"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CREDENTIALS_DIRECTORY",
        "STATE_DIRECTORY",
        "FOREWARN_SMTP_PASSWORD",
        "FOREWARN_CHAT_URL",
        "FOREWARN_TEST_UNSET_PASSWORD",
    ):
        monkeypatch.delenv(name, raising=False)


def errors_of(text: str, source: str = "test.toml") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source)
    return caught.value.errors


# --- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30), ("5m", 300), ("4h", 14_400), ("1d", 86_400), ("2w", 1_209_600),
        ("1h30m", 5_400), ("1m30s", 90), ("1d2h3m4s", 93_784), ("500ms", 0.5),
        ("1s500ms", 1.5), ("1.5h", 5_400), ("0s", 0), ("90", 90), ("2.5", 2.5), (" 10s ", 10),
        (45, 45), (2.5, 2.5), (0, 0),
    ],
)  # fmt: skip
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["5 minutes", "", "s", "5x", "-5s", "5M", "30m1h", "1h1h", "1h 30m", "m5", "1e3s",
     -1, math.inf, math.nan, True],
)  # fmt: skip
def test_parse_duration_rejects_with_a_hint(text: str | float) -> None:
    with pytest.raises(ValueError, match=DURATION_HINT):
        parse_duration(text)


def test_parse_duration_quotes_what_was_written() -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration("5 minutes")
    assert str(caught.value) == '"5 minutes" is not a duration; use 30s, 5m, 4h or 1d'


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"), (0.5, "500ms"), (30, "30s"), (90, "1m30s"), (300, "5m"), (5_400, "1h30m"),
        (86_400, "1d"), (90_061.5, "1d1h1m1s500ms"), (1_209_600, "14d"), (-60, "-1m"),
        (0.0004, "0s"),
    ],
)  # fmt: skip
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.001, 1, 59.999, 61, 3_599, 3_601, 86_399.5, 1e7])
def test_format_then_parse_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=0.0005)


# --- the shipped configs -------------------------------------------------------------------------


def test_default_config_watches_this_machine() -> None:
    config = load_config(None)
    assert [(p.name, p.kind, p.interval) for p in config.probes] == [
        ("cpu", "cpu", 15), ("load", "load", 30), ("memory", "memory", 15),
        ("swap", "swap", 30), ("disk", "disk", 60), ("sensors", "sensors", 60),
    ]  # fmt: skip
    assert config.smtp is None
    assert config.helpdesk.kind == "builtin"
    assert config.notify == NotifyConfig()


def test_default_rules_have_sensible_thresholds() -> None:
    rules = {rule.name: rule for rule in load_config(None).rules}
    expected = {  # name: (metric, condition, for, critical, clear, keep_firing_for)
        "cpu_busy": ("cpu_usage_percent", "value > 90", 600, "value > 98", None, 300),
        "load_high": ("load5_per_core", "value > 2", 900, None, None, 0),
        "memory_low": (
            "memory_used_percent", "value > 90", 300, "value > 97", "value < 85", 300
        ),
        "swap_high": ("swap_used_percent", "value > 80", 900, None, None, 0),
        "disk_full": ("disk_used_percent", "value > 85", 300, "value > 95", "value < 80", 0),
        "disk_filling": (
            "disk_used_percent", "value > 80 and eta < 4*3600", 900, "eta < 3600",
            "value < 75 or eta > 8*3600", 0,
        ),
        "disk_inodes_full": ("disk_inodes_used_percent", "value > 85", 300, "value > 95", None, 0),
        "temperature_high": ("temperature_celsius", "value > 85", 120, "value > 95", None, 0),
        "probe_failing": ("probe_up", "value == 0", 120, None, None, 0),
        "probe_stale": ("probe_stale", "value == 1", 0, None, None, 0),
        "delivery_failed": ("outbox_dead_recent", "value > 0", 0, None, None, 0),
        "alertmanager": (
            "alertmanager_alert", "value == 1", 0, 'labels.severity == "critical"', None, 0
        ),
    }  # fmt: skip
    assert set(rules) == set(expected)
    for name, (metric, condition, for_seconds, critical, clear, hold) in expected.items():
        rule = rules[name]
        assert (rule.metric, rule.condition.source, rule.for_seconds) == (
            metric,
            condition,
            for_seconds,
        )
        assert (rule.critical.source if rule.critical else None) == critical
        assert (rule.clear.source if rule.clear else None) == clear
        assert rule.keep_firing_for == hold
        assert rule.summary and rule.description and rule.category, rule.name
    filling = rules["disk_filling"]
    assert (filling.window, filling.predict, filling.predict_falling) == (21_600, 100, False)
    assert (filling.severity, filling.category) == (Severity.WARNING, "capacity")


def alert(rule: str, value: float, labels: dict[str, str]) -> AlertState:
    return AlertState("f" * 16, rule, labels, Phase.FIRING, Severity.WARNING, 0.0, 0.0, value)


def test_default_summaries_render_for_the_agent() -> None:
    rules = {rule.name: rule for rule in load_config(None).rules}
    probe = {"probe": "disk", "kind": "disk"}
    cases = [
        ("disk_full", 93.4, {"mountpoint": "/srv"}, "Filesystem /srv is 93% full"),
        ("probe_failing", 0, probe, "Probe disk (disk) keeps failing"),
        ("probe_stale", 1, probe, "Probe disk stopped reporting"),
        (
            "temperature_high",
            88.2,
            {"sensor": "coretemp", "label": "Package id 0"},
            "coretemp Package id 0 at 88°C",
        ),
    ]
    for name, value, labels, text in cases:
        assert render_summary(rules[name], alert(name, value, labels)) == text


def test_default_disk_filling_summary_says_when() -> None:
    [rule] = [rule for rule in load_config(None).rules if rule.name == "disk_filling"]
    at = 1_700_000_000.0
    state = alert(rule.name, 86.0, {"mountpoint": "/srv"})
    predicted = dataclasses.replace(state, evaluated_at=at, predicted_at=at + 3.24 * 3600)
    assert render_summary(rule, predicted) == "/srv will be full in 3.2 h at the current rate"
    # Once the trend no longer points at full (eta infinite), the title still reads well.
    assert render_summary(rule, state) == "/srv will be full at the current rate"


Seen = tuple[float, TransitionKind, Severity]


def disk_series(rule: Rule, level_at: Callable[[float], float], hours: float) -> list[Seen]:
    """(hours, transition, severity) of `rule` on a disk sampled every minute."""
    state: AlertState | None = None
    seen: list[Seen] = []
    start = 1_700_000_000.0
    for minute in range(int(hours * 60)):
        now = start + 60 * minute
        sample = Sample("disk_used_percent", level_at(minute / 60), now, {"mountpoint": "/srv"})
        step = evaluate(rule, state, sample, now)
        if step.transition is not None:
            seen.append((minute / 60, step.transition.kind, step.state.severity))
        state = step.state
    return seen


def test_default_disk_filling_warns_hours_ahead_and_not_for_a_full_quiet_disk() -> None:
    [rule] = [rule for rule in load_config(None).rules if rule.name == "disk_filling"]
    # 10 points an hour from 60%: past 80% at 2 h, full at 4 h.
    [fired, critical] = disk_series(rule, lambda hours: 60 + 10 * hours, 3.9)
    assert fired[1:] == (TransitionKind.FIRED, Severity.WARNING)
    assert 2.2 <= fired[0] <= 2.5  # past 80% and 15 min of `for`: 1.5 h or more ahead
    assert critical[1:] == (TransitionKind.SEVERITY_CHANGED, Severity.CRITICAL)
    assert 3.0 <= critical[0] <= 3.1  # under an hour to go
    assert disk_series(rule, lambda hours: 84.0, 8) == []  # high but not growing


def test_example_config_loads_with_the_password_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FOREWARN_SMTP_PASSWORD", "s3cret")
    monkeypatch.setenv("FOREWARN_CHAT_URL", "json://127.0.0.1:9/hook")
    config = load_config(str(REPO / "config.toml"))
    assert config.smtp is not None and config.smtp.password == "s3cret"
    assert {"http", "process"} <= {probe.kind for probe in config.probes}
    assert config.notify.helpdesk and config.notify.users
    assert "s3cret" not in repr(config)


def test_example_config_needs_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREWARN_CHAT_URL", "json://127.0.0.1:9/hook")
    with pytest.raises(ConfigError) as caught:
        load_config(str(REPO / "config.toml"))
    [error] = caught.value.errors
    assert error.startswith("smtp.password: environment variable FOREWARN_SMTP_PASSWORD is not set")


def keys_of(cls: type) -> set[str]:
    return {
        f.metadata.get("key", f.name)
        for f in dataclasses.fields(cls)
        if f.metadata.get("config", True)
    }


def test_example_config_documents_every_key() -> None:
    example = tomllib.loads((REPO / "config.toml").read_text(encoding="utf-8"))
    assert set(example["daemon"]) == keys_of(DaemonConfig)
    assert set(example["helpdesk"]) == keys_of(HelpdeskConfig)
    assert set(example["smtp"]) == keys_of(SmtpConfig)
    assert set(example["notify"]) == keys_of(NotifyConfig)
    probe_keys = set().union(*example["probe"])
    assert {"name", "kind", "interval", "timeout", "jitter"} <= probe_keys
    rule_keys = set().union(*example["rule"])
    assert rule_keys == {
        "name", "metric", "condition", "for", "clear", "critical", "severity", "probe",
        "summary", "description", "runbook", "service", "category", "notify_users",
        "priority", "keep_firing_for", "window", "predict", "predict_falling", "times", "checks",
        "flap_detection", "depends_on", "depends_match", "group_by", "group_wait",
        "user_impact", "still_works", "workaround", "help_url", "escalation",
    }  # fmt: skip
    maintenance_keys = set().union(*example["maintenance"])
    assert maintenance_keys == {
        "name", "cron", "duration", "matchers", "comment", "timezone", "services", "title",
        "description", "announce_before",
    }  # fmt: skip
    assert set(example["notices"]) == keys_of(NoticesConfig)
    assert set(example["status"]) == keys_of(StatusConfig)
    assert set().union(*example["service"]) == keys_of(ServiceConfig)
    assert set().union(*example["audience"]) == keys_of(AudienceConfig)
    [policy] = example["escalation"]
    assert set(policy) == {"name", "repeat", "repeat_every", "urgent_gap", "business_hours", "step"}
    assert set(policy["business_hours"]) == {
        "days", "start", "end", "timezone", "holidays", "extra_holidays"
    }  # fmt: skip
    assert set().union(*policy["step"]) == {"after", "notify", "business_hours_only"}


def test_example_config_shows_the_new_rule_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREWARN_SMTP_PASSWORD", "s3cret")
    monkeypatch.setenv("FOREWARN_CHAT_URL", "json://127.0.0.1:9/hook")
    config = load_config(str(REPO / "config.toml"))
    rules = {rule.name: rule for rule in config.rules}
    assert rules["web_down"].group_by == () and rules["web_down"].group_wait == 30
    assert rules["web_down"].depends_on == ("gateway_down",)
    assert (rules["web_flaky"].times, rules["web_flaky"].checks) == (3, 10)
    assert rules["web_flaky"].depends_match == ("url",)
    assert rules["srv_space_running_out"].predict_falling
    assert rules["sshd_missing"].ticket_priority == "high"
    assert rules["probe_stale"] is PROBE_STALE_RULE
    backup = config.maintenance[0]
    assert (backup.name, backup.cron, backup.duration) == ("nightly-backup", "0 2 * * *", 7200)
    assert backup.matchers == (Matcher("rule", MatchOp.EQUAL, "disk_busy"),)
    # 02:30 in Rome on a summer night is 00:30 UTC.
    assert window_active(backup, 1_719_793_800.0)
    assert not window_active(backup, 1_719_793_800.0 + 2 * 3600)


def test_smtp_config_builds_the_notifier_settings() -> None:
    smtp = load_config(str(CONFIGS / "good_secret_file.toml")).smtp
    assert smtp is not None
    settings = SmtpSettings(**dataclasses.asdict(smtp))
    assert (settings.port, settings.security, settings.sender) == (
        465,
        "ssl",
        "Forewarn <forewarn@example.com>",
    )


# --- broken configs ------------------------------------------------------------------------------

# file: [(path, part of the message, line)], in the order the errors are reported
BROKEN: dict[str, list[tuple[str, str, int | None]]] = {
    "bad_toml.toml": [("invalid TOML", "(at line 3, column 16)", None)],
    "unknown_top_key.toml": [("probes", "unknown key (did you mean probe?)", 4)],
    "unknown_daemon_key.toml": [
        ("daemon.state_directory", "unknown key (did you mean state_dir?)", 3)
    ],
    "unknown_probe_option.toml": [
        ("probe[2] (root).mountpoint", "unknown key (did you mean mountpoints?)", 9)
    ],
    "unknown_rule_key.toml": [("rule[1] (disk_full).severty", "did you mean severity?", 5)],
    "bad_duration.toml": [("rule[2] (disk_full).for", f'"5 minutes" {DURATION_HINT}', 10)],
    "bad_expression.toml": [("rule[1] (memory_low).condition", "not a valid expression", 4)],
    "missing_secret_file.toml": [("smtp.password", "no-such-secret does not exist", 5)],
    "unset_env_secret.toml": [
        ("smtp.password", "environment variable FOREWARN_TEST_UNSET_PASSWORD is not set", 5)
    ],
    "plain_secret.toml": [
        ("smtp.password", "write secrets as { env = ... } or { file = ... }, never in the file", 5)
    ],
    "unknown_kind.toml": [("probe[1] (web).kind", 'unknown kind "htp" (did you mean http?)', 3)],
    "duplicate_names.toml": [
        ("probe[2] (cpu).name", 'duplicate name "cpu" (also probe[1])', 6),
        ("rule[2] (busy).name", 'duplicate name "busy" (also rule[1])', 16),
    ],
    "unknown_rule_probe.toml": [("rule[1] (busy).probe", 'no [[probe]] is named "cpu0"', 9)],
    "bad_probe_options.toml": [
        ("probe[1] (sshd)", "exactly one of match_name, match_cmdline, pidfile", 1)
    ],
    "bad_rule_types.toml": [
        ("rule[1] (disk_filling).priority", '"urgent" is not one of high, medium, low', 17),
        ("rule[1] (disk_filling).keep_firing_for", f'"a while" {DURATION_HINT}', 6),
        ("rule[1] (disk_filling).window", "0s is too short; use at least 1s", 7),
        ("rule[1] (disk_filling).predict", 'expected a number, got "full"', 8),
        ("rule[1] (disk_filling).predict_falling", 'expected true or false, got "yes"', 9),
        ("rule[1] (disk_filling).times", "0 is out of range; use 1 to 1000", 10),
        ("rule[1] (disk_filling).checks", "1001 is out of range; use 1 to 1000", 11),
        ("rule[1] (disk_filling).flap_detection", "expected true or false, got 1", 12),
        ("rule[1] (disk_filling).depends_on", 'expected a list, got "other"', 13),
        ("rule[1] (disk_filling).depends_match", '"mount point" is not a label name', 14),
        ("rule[1] (disk_filling).group_by", '"probe" is listed twice', 15),
        ("rule[1] (disk_filling).group_wait", f"-5 {DURATION_HINT}", 16),
    ],
    "bad_rule_combinations.toml": [
        (
            "rule[1] (filling).window",
            'too short for probe "disk", which runs every 1m; use at least 4m (4 runs)',
            14,
        ),
        ("rule[2] (trend_without_window).condition", "uses slope, which needs a window", 19),
        ("rule[2] (trend_without_window).critical", "uses eta, which needs a window", 20),
        ("rule[3] (eta_without_predict).clear", "uses eta, the time until the trend", 27),
        ("rule[4] (half_x_within_y).checks", "times and checks go together", 29),
        ("rule[5] (more_times_than_checks).times", "5 is more than checks (3)", 39),
        ("rule[6] (loose_ends).depends_match", "only means something with depends_on", 46),
        ("rule[6] (loose_ends).group_wait", "only means something with group_by", 47),
    ],
    "bad_dependencies.toml": [
        (
            "rule[1] (web_down).depends_on",
            'no [[rule]] is named "gatway_down" (did you mean gateway_down?)',
            6,
        ),
        ("rule[2] (selfish).depends_on", "a rule cannot depend on itself", 12),
        ("rule[3] (a).depends_on", "dependency cycle a -> b -> c -> a", 18),
    ],
    "bad_maintenance.toml": [
        ("maintenance[1] (backup).cron", "'0 25 * * *' is not valid: ", 4),
        ("maintenance[1] (backup).timezone", "'Europe/Milano' is not an IANA time zone", 7),
        ("maintenance[2] (backup).name", 'duplicate name "backup" (also maintenance[1])', 10),
        ("maintenance[2] (backup).duration", f'"forever" {DURATION_HINT}', 12),
        ("maintenance[2] (backup).matchers[1]", "matcher 'rule==\"disk_busy\"'", 13),
        ("maintenance[2] (backup).matchers[2]", "is not a valid regular expression", 13),
        ("maintenance[3] (everything).cron", "restricts both day of month and weekday", 18),
        ("maintenance[3] (everything).matchers", "at least one matcher must not match", 20),
        ("maintenance[4] (incomplete).flavour", "unknown key; known keys: announce_before", 25),
        ("maintenance[4] (incomplete).duration", "missing required key", 22),
        ("maintenance[4] (incomplete).matchers", "missing required key", 22),
    ],
    "bad_routes.toml": [
        ("route[1] (payroll).matchers[2]", "matcher 'team==\"hr\"': value contains", 9),
        ("route[1] (payroll).methd", "unknown key (did you mean method?)", 12),
        ("route[2] (payroll).name", 'duplicate name "payroll" (also route[1])', 15),
        ("route[2] (payroll).matchers", "give at least one matcher", 16),
        ("route[3] (default).name", '"default" names the [helpdesk] itself', 19),
        ("route[3] (default).matchers", "missing required key", 18),
        ("route[4] (storage).sync_interval", f'"soon" {DURATION_HINT}', 28),
        ("route[4] (storage)", "url must be an http:// or https:// URL with a host", 23),
        ("route[5] (erp).kind", 'unknown kind "jira"; known kinds: builtin, email, redmine', 33),
    ],
    "many_errors.toml": [
        ("colour", "unknown key", 2),
        ("daemon.log_level", '"verbose" is not one of debug, info, warning, error', 5),
        ("daemon.reopen_within", f'"a day" {DURATION_HINT}', 6),
        ("probe[1] (disk).interval", "500ms is too short; use at least 1s", 11),
        ("probe[1] (disk).mountpoints[2]", "expected a string, got 42", 12),
        ("rule[1] (disk_full).condition", "not a valid expression", 17),
        ("rule[1] (disk_full).for", f'"5 minutes" {DURATION_HINT}', 18),
        ("rule[1] (disk_full).severity", '"urgent" is not one of info, warning, critical', 19),
        ("rule[1] (disk_full).notify_users", 'expected true or false, got "yes"', 20),
    ],
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_config_reports_path_message_and_line(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(CONFIGS / name))
    errors = caught.value.errors
    assert len(errors) == len(BROKEN[name]), errors
    for error, (path, message, line) in zip(errors, BROKEN[name], strict=True):
        assert error.startswith(f"{path}: "), error
        assert message in error
        if line is not None:
            assert error.endswith(f" (line {line})"), error


def test_every_broken_config_is_tested() -> None:
    assert {path.name for path in CONFIGS.glob("*.toml")} - set(BROKEN) == {"good_secret_file.toml"}


def test_a_secret_written_in_the_file_is_never_repeated() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(CONFIGS / "plain_secret.toml"))
    assert "hunter2" not in str(caught.value)
    assert not any("hunter2" in error for error in caught.value.errors)


def test_config_error_names_the_file_and_counts() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(CONFIGS / "duplicate_names.toml"))
    first_line = str(caught.value).splitlines()[0]
    assert first_line == f"{CONFIGS / 'duplicate_names.toml'} is not valid (2 errors):"


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "absent.toml"))
    assert caught.value.errors == ["cannot read the file: No such file or directory"]


# --- secrets -------------------------------------------------------------------------------------

SMTP_WITH_FILE = """
[smtp]
from = "forewarn@example.com"
username = "forewarn"
password = {{ file = "{path}" }}
"""


def test_secret_file_next_to_the_config_loses_its_trailing_newline() -> None:
    smtp = load_config(str(CONFIGS / "good_secret_file.toml")).smtp
    assert smtp is not None and smtp.password == "correct horse battery staple"


def test_secret_file_in_the_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "smtp-password").write_text("from-credentials\r\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    smtp = load_config(str(CONFIGS / "good_secret_file.toml")).smtp
    assert smtp is not None and smtp.password == "from-credentials"


def test_secret_file_by_absolute_path(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("absolute\n")
    smtp = parse_config(SMTP_WITH_FILE.format(path=secret), "elsewhere/config.toml").smtp
    assert smtp is not None and smtp.password == "absolute"


def test_secret_file_that_cannot_be_read(tmp_path: Path) -> None:
    [error] = errors_of(SMTP_WITH_FILE.format(path=tmp_path))  # a directory
    assert error.startswith(f"smtp.password: cannot read secret file {tmp_path}: ")


def test_empty_environment_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREWARN_SMTP_PASSWORD", "")
    text = '[smtp]\nfrom = "a@example.com"\nusername = "u"\n'
    text += 'password = { env = "FOREWARN_SMTP_PASSWORD" }\n'
    assert errors_of(text) == [
        "smtp.password: environment variable FOREWARN_SMTP_PASSWORD is empty (line 4)"
    ]


@pytest.mark.parametrize(
    "value", ['{ env = "A", file = "b" }', '{ vault = "x" }', "{ env = 5 }", "42"]
)
def test_malformed_secret_reference(value: str) -> None:
    text = f'[smtp]\nfrom = "a@example.com"\nusername = "u"\npassword = {value}\n'
    assert errors_of(text) == [
        "smtp.password: write secrets as { env = ... } or { file = ... }, never in the file "
        "(line 4)"
    ]


def test_username_and_password_go_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREWARN_SMTP_PASSWORD", "x")
    text = '[smtp]\nfrom = "a@example.com"\npassword = { env = "FOREWARN_SMTP_PASSWORD" }\n'
    [error] = errors_of(text)
    assert error.startswith("smtp.username: username and password go together")


# --- sections ------------------------------------------------------------------------------------


def test_empty_file_is_a_machine_without_probes() -> None:
    config = parse_config("", "empty.toml")
    assert (config.probes, config.smtp, config.maintenance) == ((), None, ())
    assert config.rules == BUILTIN_RULES
    assert config.daemon.hostname == socket.gethostname()
    assert config.daemon.reopen_within == 86_400
    assert config.source == "empty.toml"


def test_state_dir_from_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/srv/state-a:/srv/state-b")
    assert parse_config("", "c.toml").daemon.state_dir == "/srv/state-a"
    written = parse_config('[daemon]\nstate_dir = "state"\n', "c.toml").daemon.state_dir
    assert written == "state"


def test_state_dir_for_a_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", "/home/someone/.state")
    assert parse_config("", "c.toml").daemon.state_dir == "/home/someone/.state/forewarn"


@pytest.mark.parametrize(
    ("listen", "address"),
    [("127.0.0.1:9877", ("127.0.0.1", 9877)), ("[::1]:0", ("::1", 0)), ("", None)],
)
def test_listen_address(listen: str, address: tuple[str, int] | None) -> None:
    config = parse_config(f'[daemon]\nlisten = "{listen}"\n', "c.toml")
    assert config.daemon.listen_address == address


@pytest.mark.parametrize("listen", ["9877", "localhost:http", ":9877", "127.0.0.1:70000"])
def test_listen_must_be_host_and_port(listen: str) -> None:
    [error] = errors_of(f'[daemon]\nlisten = "{listen}"\n')
    assert error.startswith(f'daemon.listen: "{listen}" is not host:port')


def test_templates_dir_must_exist(tmp_path: Path) -> None:
    config = parse_config(f'[daemon]\ntemplates_dir = "{tmp_path}"\n', "c.toml")
    assert config.daemon.templates_dir == str(tmp_path)
    [error] = errors_of(f'[daemon]\ntemplates_dir = "{tmp_path / "none"}"\n')
    assert error == f'daemon.templates_dir: "{tmp_path / "none"}" is not a directory (line 2)'


def test_unknown_helpdesk_kind() -> None:
    [error] = errors_of('[helpdesk]\nkind = "jira"\nurl = "https://jira.example.com"\n')
    assert error.startswith('helpdesk.kind: unknown kind "jira"; known kinds: ')


def test_notify_addresses_need_smtp() -> None:
    assert errors_of('[notify]\nusers = ["staff@example.com"]\n') == [
        "notify.users: addresses given but there is no [smtp] section to send through (line 2)"
    ]


def test_notify_addresses_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    text = '[smtp]\nfrom = "a@example.com"\n[notify]\nhelpdesk = ["helpdesk"]\n'
    assert errors_of(text) == ['notify.helpdesk: "helpdesk" is not an e-mail address (line 4)']


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('probe = "cpu"', "probe: write each probe as a [[probe]] table (line 1)"),
        ('[rule]\nname = "x"', "rule: write each rule as a [[rule]] table (line 1)"),
        ("daemon = 5", "daemon: expected a [daemon] table, got 5 (line 1)"),
        ("probe = [1]", "probe[1]: expected a table, got 1"),
    ],
)
def test_sections_of_the_wrong_shape(text: str, error: str) -> None:
    assert errors_of(text) == [error]


# --- probes and rules ----------------------------------------------------------------------------


def one_probe(lines: str) -> Config:
    return parse_config(f"[[probe]]\n{lines}\n", "c.toml")


@pytest.mark.parametrize(
    ("lines", "timing"),
    [
        ('name = "c"\nkind = "cpu"', (30, 10, 1)),
        ('name = "c"\nkind = "cpu"\ninterval = "5s"', (5, 5, 0.5)),
        ('name = "c"\nkind = "cpu"\ninterval = "1m"\ntimeout = "20s"\njitter = 0', (60, 20, 0)),
        # http bounds each exchange itself; the scheduler waits a second longer.
        ('name = "w"\nkind = "http"\nurl = "http://127.0.0.1:1/"\ntimeout = "4s"', (30, 5, 1)),
    ],
)
def test_probe_timing(lines: str, timing: tuple[float, float, float]) -> None:
    [probe] = one_probe(lines).probes
    assert (probe.interval, probe.timeout, probe.jitter) == timing


def test_probe_options_get_shared_keys() -> None:
    [probe] = one_probe(
        'name = "w"\nkind = "http"\nurl = "http://127.0.0.1:1/"\ntimeout = "4s"'
    ).probes
    assert probe.options.timeout == 4
    assert probe.options.url == "http://127.0.0.1:1/"


def test_probe_timing_errors() -> None:
    errors = errors_of(
        '[[probe]]\nname = "c"\nkind = "cpu"\ninterval = "10s"\ntimeout = "1m"\njitter = "10s"\n'
    )
    assert errors == [
        "probe[1] (c).timeout: 1m is longer than the interval (10s) (line 5)",
        "probe[1] (c).jitter: 10s must be shorter than the interval (10s) (line 6)",
    ]


def test_probe_missing_name_and_kind() -> None:
    assert errors_of("[[probe]]\ninterval = 5\n") == [
        "probe[1].name: missing required key (line 1)",
        "probe[1].kind: missing required key (line 1)",
    ]


def test_probe_name_characters() -> None:
    [error] = errors_of('[[probe]]\nname = "my probe"\nkind = "cpu"\n')
    assert error.startswith('probe[1] (my probe).name: "my probe" is not a valid name')


RULE = '[[rule]]\nname = "r"\nmetric = "m"\ncondition = "value > 1"\n'


def own_rules(text: str) -> list[Rule]:
    """The rules the text defines, without the built-in ones added to every config."""
    return [rule for rule in parse_config(text, "c.toml").rules if rule not in BUILTIN_RULES]


def test_rule_defaults_and_compiled_conditions() -> None:
    [rule] = own_rules(RULE)
    assert (rule.for_seconds, rule.severity, rule.clear, rule.critical) == (
        0,
        Severity.WARNING,
        None,
        None,
    )
    assert rule.condition({"value": 2.0, "labels": {}}) is True
    assert rule.condition({"value": 0.5, "labels": {}}) is False


def test_rule_with_every_key() -> None:
    text = (
        '[[probe]]\nname = "web"\nkind = "http"\nurl = "http://127.0.0.1:1/"\n'
        + RULE
        + 'for = "1h30m"\nclear = "value < 1"\ncritical = "value > 5"\n'
        'severity = "critical"\nprobe = "web"\nsummary = "{{ labels.url }} down"\n'
        'description = "d {{"\nrunbook = "https://wiki.example.com/r"\nservice = "the site"\n'
        'category = "service"\nnotify_users = true\n'
    )
    [rule] = own_rules(text)
    assert (rule.for_seconds, rule.severity, rule.probe, rule.notify_users) == (
        5_400,
        Severity.CRITICAL,
        "web",
        True,
    )
    assert rule.clear is not None and rule.clear({"value": 0.0, "labels": {}})
    assert (rule.description, rule.service, rule.category) == ("d {{", "the site", "service")


def test_rule_summary_must_be_a_template() -> None:
    [error] = errors_of(RULE + 'summary = "{{ labels.mountpoint"\n')
    assert error.startswith("rule[1] (r).summary: not a valid template: ")
    assert error.endswith("(line 5)")


def test_rule_metric_must_be_a_metric_name() -> None:
    [error] = errors_of(RULE.replace('"m"', '"disk-used"'))
    assert (
        error == 'rule[1] (r).metric: "disk-used" is not a metric name; use letters, '
        "digits and _ (line 3)"
    )


def test_rule_for_a_probe_with_other_errors_is_not_blamed_twice() -> None:
    errors = errors_of(
        '[[probe]]\nname = "c"\nkind = "cpu"\ninterval = "0s"\n' + RULE + 'probe = "c"\n'
    )
    assert [error.split(":")[0] for error in errors] == ["probe[1] (c).interval"]


# --- the rule engine's keys ----------------------------------------------------------------------

DISK_PROBE = '[[probe]]\nname = "disk"\nkind = "disk"\ninterval = "1m"\n'


def test_new_rule_keys_default_to_the_plain_rule() -> None:
    [rule] = own_rules(RULE)
    assert rule == Rule(rule.name, rule.metric, rule.condition)
    assert rule.ticket_priority == "medium"  # from the severity, warning


def test_rule_with_every_new_key() -> None:
    text = (
        DISK_PROBE + RULE.replace('"value > 1"', '"value > 80 and eta < 3600"')
        + 'probe = "disk"\nkeep_firing_for = "10m"\nwindow = "4m"\npredict = 5e9\n'
        'predict_falling = true\ntimes = 3\nchecks = 10\nflap_detection = false\n'
        'depends_on = ["root"]\ndepends_match = ["mountpoint", "device"]\n'
        'group_by = ["probe"]\ngroup_wait = "30s"\npriority = "low"\nseverity = "critical"\n'
        '[[rule]]\nname = "root"\nmetric = "disk_used_percent"\ncondition = "value > 99"\n'
    )  # fmt: skip
    [rule, _root] = own_rules(text)
    assert (rule.keep_firing_for, rule.window, rule.predict, rule.predict_falling) == (
        600, 240, 5e9, True
    )  # fmt: skip
    assert (rule.times, rule.checks, rule.flap_detection) == (3, 10, False)
    assert (rule.depends_on, rule.depends_match) == (("root",), ("mountpoint", "device"))
    assert (rule.group_by, rule.group_wait) == (("probe",), 30)
    assert (rule.priority, rule.ticket_priority) == ("low", "low")
    assert all(type(getattr(rule, key)) is float for key in ("window", "group_wait"))


@pytest.mark.parametrize(
    ("lines", "value"),
    [
        ("", None),
        ("group_by = []", ()),  # every alert of the rule in one incident
        ('group_by = ["probe", "url"]', ("probe", "url")),
    ],
)
def test_group_by_absent_empty_or_labels(lines: str, value: tuple[str, ...] | None) -> None:
    [rule] = own_rules(RULE + lines)
    assert rule.group_by == value


def test_window_without_a_probe_need_only_be_positive() -> None:
    [rule] = own_rules(RULE.replace('"value > 1"', '"rate > 0"') + 'window = "1s"\n')
    assert rule.window == 1
    [error] = errors_of(RULE + "window = 0\n")
    assert error == "rule[1] (r).window: 0s is too short; use at least 1s (line 5)"


@pytest.mark.parametrize(("window", "ok"), [("4m", True), ("3m59s", False), ("1d", True)])
def test_window_spans_four_runs_of_its_probe(window: str, ok: bool) -> None:
    text = DISK_PROBE + RULE + f'probe = "disk"\nwindow = "{window}"\n'
    if ok:
        assert own_rules(text)[0].window == parse_duration(window)
    else:
        [error] = errors_of(text)
        assert error.startswith(f"rule[1] (r).window: {window} is too short for probe")


def test_predict_needs_a_window_and_predict_falling_a_predict() -> None:
    assert errors_of(RULE + "predict = 100\n") == [
        "rule[1] (r).predict: needs a window, the history the trend is fitted over: e.g. "
        'window = "6h" (line 5)'
    ]
    [error] = errors_of(RULE + "predict_falling = true\n")
    assert error.startswith("rule[1] (r).predict_falling: only means something with predict")
    [rule] = own_rules(RULE + "predict_falling = false\n")  # says nothing: nothing to report
    assert not rule.predict_falling


@pytest.mark.parametrize("level", ["inf", "nan", "-inf"])
def test_predict_is_a_finite_level(level: str) -> None:
    [error] = errors_of(RULE + f'window = "1h"\npredict = {level}\n')
    assert error.startswith("rule[1] (r).predict: ") and "not a level" in error


@pytest.mark.parametrize("variable", ["eta", "rate", "slope"])
def test_trend_variables_need_a_window(variable: str) -> None:
    condition = f"value > 1 and {variable} < 60"
    [error] = errors_of(RULE.replace('"value > 1"', f'"{condition}"'))
    assert error.startswith(f"rule[1] (r).condition: uses {variable}, which needs a window")
    with_window = RULE.replace('"value > 1"', f'"{condition}"') + 'window = "1h"\n'
    if variable == "eta":
        [error] = errors_of(with_window)
        assert error.startswith("rule[1] (r).condition: uses eta, the time until the trend")
    else:
        assert own_rules(with_window)[0].window == 3600


def test_trend_variables_are_names_not_words_in_strings() -> None:
    # Only the variables an expression reads count: a label value or key may say "eta".
    text = RULE.replace('"value > 1"', """'labels.eta == "slope" and labels["rate"] == "x"'""")
    assert own_rules(text)[0].window == 0


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ("times = 3", "rule[1] (r).checks: times and checks go together"),
        ("checks = 10", "rule[1] (r).times: times and checks go together"),
        ("times = 4\nchecks = 3", "rule[1] (r).times: 4 is more than checks (3) (line 5)"),
        ("times = 0\nchecks = 3", "rule[1] (r).times: 0 is out of range; use 1 to 1000 (line 5)"),
        ("times = 1\nchecks = 1001", "rule[1] (r).checks: 1001 is out of range; use 1 to 1000"),
        ("times = 2.5\nchecks = 3", "rule[1] (r).times: expected a whole number, got 2.5"),
    ],
)
def test_times_and_checks_errors(lines: str, error: str) -> None:
    [message] = errors_of(RULE + lines + "\n")
    assert message.startswith(error), message


@pytest.mark.parametrize(("times", "checks"), [(1, 1), (3, 10), (1000, 1000)])
def test_times_and_checks_bounds(times: int, checks: int) -> None:
    [rule] = own_rules(RULE + f"times = {times}\nchecks = {checks}\n")
    assert (rule.times, rule.checks) == (times, checks)


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ('priority = "urgent"', 'priority: "urgent" is not one of high, medium, low'),
        ('priority = ""', 'priority: "" is not one of high, medium, low'),
        ("flap_detection = 0", "flap_detection: expected true or false, got 0"),
        ('keep_firing_for = "soon"', f'keep_firing_for: "soon" {DURATION_HINT}'),
        ('group_by = ["mount-point"]', 'group_by: "mount-point" is not a label name'),
        ('group_by = "probe"', 'group_by: expected a list, got "probe"'),
        ('group_wait = "30s"', "group_wait: only means something with group_by"),
        ('depends_match = ["url"]', "depends_match: only means something with depends_on"),
        ('depends_on = ["r"]', "depends_on: a rule cannot depend on itself"),
        ('depends_on = ["nope"]', 'depends_on: no [[rule]] is named "nope"'),
        ('depends_on = ["a b"]', 'depends_on: "a b" is not a valid name'),
    ],
)
def test_new_rule_key_errors(lines: str, error: str) -> None:
    [message] = errors_of(RULE + lines + "\n")
    assert message.startswith(f"rule[1] (r).{error}"), message
    assert message.endswith(" (line 5)")


@pytest.mark.parametrize("priority", ["high", "medium", "low"])
def test_priority_overrides_the_severity(priority: str) -> None:
    [rule] = own_rules(RULE + f'severity = "critical"\npriority = "{priority}"\n')
    assert rule.ticket_priority == priority


def test_zero_group_wait_without_group_by_says_nothing() -> None:
    [rule] = own_rules(RULE + 'group_wait = "0s"\n')
    assert (rule.group_by, rule.group_wait) == (None, 0)


# --- dependencies --------------------------------------------------------------------------------


def rules_text(*rules: tuple[str, list[str]]) -> str:
    """[[rule]] tables named and depending as given, in this order."""
    return "".join(
        f'[[rule]]\nname = "{name}"\nmetric = "m"\ncondition = "value > 1"\n'
        f"depends_on = {depends_on!r}\n".replace("'", '"')
        for name, depends_on in rules
    )


def test_dependencies_in_any_order_load() -> None:
    text = rules_text(("web", ["gateway", "dns"]), ("gateway", []), ("dns", ["gateway"]))
    assert [(rule.name, rule.depends_on) for rule in own_rules(text)] == [
        ("web", ("gateway", "dns")),
        ("gateway", ()),
        ("dns", ("gateway",)),
    ]


def test_a_rule_may_depend_on_the_built_in_probe_stale() -> None:
    [rule] = own_rules(rules_text(("web", ["probe_stale"])))
    assert rule.depends_on == ("probe_stale",)


@pytest.mark.parametrize(
    ("rules", "errors"),
    [
        (
            [("a", ["b"]), ("b", ["a"])],
            ["rule[1] (a).depends_on: dependency cycle a -> b -> a (line 5)"],
        ),
        (  # reported at the rule that comes first in the file, wherever the walk met it
            [("x", ["c"]), ("c", ["a"]), ("b", ["c"]), ("a", ["b"])],
            ["rule[2] (c).depends_on: dependency cycle c -> a -> b -> c (line 10)"],
        ),
        (  # two separate cycles, each once
            [("a", ["b"]), ("b", ["a"]), ("c", ["d"]), ("d", ["c"])],
            [
                "rule[1] (a).depends_on: dependency cycle a -> b -> a (line 5)",
                "rule[3] (c).depends_on: dependency cycle c -> d -> c (line 15)",
            ],
        ),
        (
            [("a", ["a", "b"]), ("b", [])],
            ["rule[1] (a).depends_on: a rule cannot depend on itself (line 5)"],
        ),
    ],
)
def test_dependency_cycles(rules: list[tuple[str, list[str]]], errors: list[str]) -> None:
    assert errors_of(rules_text(*rules)) == errors


def test_a_cycle_longer_than_the_python_stack_is_found() -> None:
    chain = [(f"r{number}", [f"r{(number + 1) % 1100}"]) for number in range(1100)]
    [error] = errors_of(rules_text(*chain))
    assert error.startswith("rule[1] (r0).depends_on: dependency cycle r0 -> r1 -> r2 -> ")
    assert error.endswith(" -> r1099 -> r0 (line 5)")


def test_a_dependency_on_a_rule_with_errors_is_not_blamed() -> None:
    text = rules_text(("web", ["gateway"]), ("gateway", [])) + 'for = "soon"\n'
    assert [error.split(":")[0] for error in errors_of(text)] == ["rule[2] (gateway).for"]


# --- the dead-man rule ---------------------------------------------------------------------------


def test_probe_stale_is_built_in() -> None:
    rule = PROBE_STALE_RULE
    assert (rule.name, rule.metric, rule.condition.source) == (
        "probe_stale",
        "probe_stale",
        "value == 1",
    )
    assert (rule.severity, rule.category, rule.for_seconds) == (Severity.WARNING, "monitoring", 0)
    assert rule.summary == "Probe {{ labels.probe }} stopped reporting"
    assert "three of its intervals" in rule.description
    assert rule.condition({"value": 1.0}) and not rule.condition({"value": 0.0})
    assert parse_config(RULE, "c.toml").rules[-len(BUILTIN_RULES) :] == BUILTIN_RULES


def test_delivery_failed_is_built_in() -> None:
    rule = DELIVERY_FAILED_RULE
    assert (rule.metric, rule.severity, rule.category) == (
        "outbox_dead_recent",
        Severity.WARNING,
        "monitoring",
    )
    assert rule.condition({"value": 1.0}) and not rule.condition({"value": 0.0})


def test_probe_stale_can_be_overridden() -> None:
    text = RULE.replace('"r"', '"probe_stale"').replace('"m"', '"probe_stale"')
    text += 'severity = "critical"\nfor = "5m"\n'
    rule, *builtins = parse_config(text, "c.toml").rules
    assert DELIVERY_FAILED_RULE in builtins and PROBE_STALE_RULE not in builtins
    assert (rule.name, rule.severity, rule.for_seconds) == ("probe_stale", Severity.CRITICAL, 300)


@pytest.mark.parametrize(
    ("interval", "timeout", "stale"), [(30, 10, 100), (60, 60, 240), (1, 0.5, 3.5)]
)
def test_stale_after_is_three_missed_runs(interval: float, timeout: float, stale: float) -> None:
    probe = ProbeConfig("p", "cpu", interval, timeout, 0.0, None)
    assert stale_after(probe) == stale


def test_stale_after_of_a_configured_probe() -> None:
    [probe] = one_probe('name = "c"\nkind = "cpu"\ninterval = "1m"\ntimeout = "20s"').probes
    assert stale_after(probe) == 200


# --- maintenance windows -------------------------------------------------------------------------

WINDOW = '[[maintenance]]\nname = "backup"\ncron = "0 2 * * *"\nduration = "2h"\n'


def test_maintenance_window_with_defaults() -> None:
    config = parse_config(WINDOW + """matchers = ['rule="disk_busy"']\n""", "c.toml")
    [window] = config.maintenance
    assert (window.name, window.cron, window.duration) == ("backup", "0 2 * * *", 7200)
    assert (window.comment, window.timezone) == ("", "UTC")
    assert type(window.duration) is float
    assert window.matchers == (Matcher("rule", MatchOp.EQUAL, "disk_busy"),)
    two_am = 1_704_074_400.0  # 2024-01-01 02:00 UTC
    assert window_active(window, two_am) and not window_active(window, two_am - 1)
    assert not window_active(window, two_am + 7200)


def test_maintenance_window_matchers_and_time_zone() -> None:
    text = WINDOW + (
        """matchers = ['rule=~"disk_.*"', 'mountpoint=~"/srv/.*"', 'device != "sda"']\n"""
        'timezone = "America/New_York"\ncomment = "backup"\n'
    )
    [window] = parse_config(text, "c.toml").maintenance
    assert [str(matcher) for matcher in window.matchers] == [
        'rule=~"disk_.*"', 'mountpoint=~"/srv/.*"', 'device!="sda"'
    ]  # fmt: skip
    two_am_new_york = 1_704_092_400.0  # 2024-01-01 07:00 UTC
    assert window_active(window, two_am_new_york)
    assert not window_active(window, 1_704_074_400.0)  # 02:00 UTC


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ("matchers = []", "maintenance[1] (backup).matchers: at least one matcher must not"),
        ("matchers = ['rule=~\".*\"']", "maintenance[1] (backup).matchers: at least one"),
        ("matchers = ['rule']", "maintenance[1] (backup).matchers[1]: matcher 'rule': expected"),
        ("matchers = 'rule=\"x\"'", "maintenance[1] (backup).matchers: expected a list"),
        ("matchers = ['rule=\"x\"', 5]", "maintenance[1] (backup).matchers[2]: expected a str"),
    ],
)
def test_maintenance_matcher_errors(lines: str, error: str) -> None:
    [message] = errors_of(WINDOW + lines + "\n")
    assert message.startswith(error), message
    assert message.endswith(" (line 5)")


def window_text(**values: str) -> str:
    """A [[maintenance]] table: a valid one, with `values` (TOML as written) instead."""
    keys = {"name": '"backup"', "cron": '"0 2 * * *"', "duration": '"2h"'}
    keys["matchers"] = """['rule="x"']"""
    return "[[maintenance]]\n" + "".join(f"{k} = {v}\n" for k, v in (keys | values).items())


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("cron", '"0 2 * *"', "'0 2 * *' is not valid: a crontab line has 5 fields, this one 4"),
        ("cron", '"61 * * * *"', "'61 * * * *' is not valid: "),
        ("cron", '"0 2 * * 8"', "weekday range '8' must lie within 0-7"),
        ("timezone", '"CET+1"', "'CET+1' is not an IANA time zone"),
        ("duration", '"0s"', "0s is too short; use at least 1s"),
        ("duration", "[1]", "expected a duration, got a list"),
        ("comment", "5", "expected a string, got 5"),
    ],
)
def test_maintenance_key_errors(key: str, value: str, error: str) -> None:
    text = window_text(**{key: value})
    [message] = errors_of(text)
    assert message.startswith(f"maintenance[1] (backup).{key}: "), message
    assert error in message
    line = next(n for n, text in enumerate(text.splitlines(), 1) if text.startswith(key))
    assert message.endswith(f" (line {line})")


def test_maintenance_name_must_be_a_name_and_unique() -> None:
    text = window_text(name='"nightly backup"') + window_text() + window_text()
    assert errors_of(text) == [
        'maintenance[1] (nightly backup).name: "nightly backup" is not a valid name; use '
        "letters, digits, _ . and - (line 2)",
        'maintenance[3] (backup).name: duplicate name "backup" (also maintenance[2]) (line 12)',
    ]


def test_maintenance_must_be_an_array_of_tables() -> None:
    assert errors_of('[maintenance]\nname = "x"\n') == [
        "maintenance: write each maintenance as a [[maintenance]] table (line 1)"
    ]


# --- routes --------------------------------------------------------------------------------------

ROUTE = """[[route]]\nname = "payroll"\nmatchers = ['service="payroll"']\n"""
WEBHOOK = 'kind = "webhook"\nurl = "http://127.0.0.1:8080/tickets"\n'


def test_routes_in_file_order_with_their_help_desks() -> None:
    text = (
        ROUTE + WEBHOOK + 'method = "PUT"\ncontact = "extension 4321"\nsync_interval = "5m"\n'
        """[[route]]\nname = "disks"\nmatchers = ['rule=~"disk_.*"', 'mountpoint!="/"']\n"""
    )
    config = parse_config('[helpdesk]\ncontact = "call 1234"\n' + text, "c.toml")
    payroll, disks = config.routes
    assert (payroll.name, payroll.matchers) == (
        "payroll",
        (Matcher("service", MatchOp.EQUAL, "payroll"),),
    )
    helpdesk = payroll.helpdesk
    assert (helpdesk.kind, helpdesk.contact, helpdesk.sync_interval) == (
        "webhook",
        "extension 4321",
        300,
    )
    assert (helpdesk.options.url, helpdesk.options.method) == (
        "http://127.0.0.1:8080/tickets",
        "PUT",
    )
    assert disks.name == "disks" and [str(m) for m in disks.matchers] == [
        'rule=~"disk_.*"',
        'mountpoint!="/"',
    ]
    # Like [helpdesk]: the built-in store, and its defaults, not what [helpdesk] says.
    assert disks.helpdesk == HelpdeskConfig() == dataclasses.replace(config.helpdesk, contact="")


def test_no_routes() -> None:
    assert parse_config("", "c.toml").routes == ()
    assert "routes" in {f.name for f in dataclasses.fields(Config)}


def test_route_is_frozen() -> None:
    [route] = parse_config(ROUTE, "c.toml").routes
    assert isinstance(route, RouteConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        route.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            ROUTE.replace("service=", "service==") + WEBHOOK,
            "route[1] (payroll).matchers[1]: matcher 'service==\"payroll\"': value contains an "
            'unescaped double quote; write \\" inside quotes (line 3)',
        ),
        (
            ROUTE.replace("matchers = ['service=\"payroll\"']", "matchers = []"),
            "route[1] (payroll).matchers: give at least one matcher, e.g. "
            """['service="payroll"'] (line 3)""",
        ),
        (
            '[[route]]\nname = "payroll"\n' + WEBHOOK,
            "route[1] (payroll).matchers: missing required key (line 1)",
        ),
        (
            ROUTE.replace('"payroll"\n', '"default"\n'),
            'route[1] (default).name: "default" names the [helpdesk] itself; give the route its '
            "own name (line 2)",
        ),
        (
            ROUTE.replace('"payroll"\n', '"pay roll"\n'),
            'route[1] (pay roll).name: "pay roll" is not a valid name; use letters, digits, _ . '
            "and - (line 2)",
        ),
        (
            ROUTE + 'kind = "jira"\n',
            'route[1] (payroll).kind: unknown kind "jira"; known kinds: builtin, email, redmine, '
            "rt, webhook (line 4)",
        ),
        (
            ROUTE + WEBHOOK + 'method = "FETCH"\n',
            "route[1] (payroll): method must be one of",
        ),
        (
            ROUTE + 'sync_interval = "0s"\n',
            "route[1] (payroll).sync_interval: 0s is too short; use at least 1s (line 4)",
        ),
        ('[route]\nname = "x"\n', "route: write each route as a [[route]] table (line 1)"),
        ("route = [1]\n", "route[1]: expected a table, got 1"),
    ],
)
def test_route_errors(text: str, error: str) -> None:
    [message] = errors_of(text)
    assert message.startswith(error), message


def test_route_unknown_keys_name_every_known_key() -> None:
    # The builtin kind has no options of its own: the route's keys and [helpdesk]'s are all.
    assert errors_of(ROUTE + 'matcher = "x"\nproject = "payroll"\n') == [
        "route[1] (payroll).matcher: unknown key (did you mean matchers?); known keys: "
        "contact, kind, matchers, name, sync_interval (line 4)",
        "route[1] (payroll).project: unknown key; known keys: contact, kind, matchers, name, "
        "sync_interval (line 5)",
    ]
    [message] = errors_of(ROUTE + WEBHOOK + 'methd = "PUT"\n')
    assert message.startswith("route[1] (payroll).methd: unknown key (did you mean method?); ")
    assert "matchers, method, name," in message


def test_route_names_are_unique_and_errors_say_which_route() -> None:
    second = ROUTE.replace("service=", "service==")
    assert errors_of(ROUTE + second) == [
        'route[2] (payroll).name: duplicate name "payroll" (also route[1]) (line 5)',
        "route[2] (payroll).matchers[1]: matcher 'service==\"payroll\"': value contains an "
        'unescaped double quote; write \\" inside quotes (line 6)',
    ]


def test_example_config_documents_a_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commented [[route]] of config.toml, uncommented, is a valid route."""
    lines = (REPO / "config.toml").read_text(encoding="utf-8").splitlines()
    start = lines.index("# [[route]]")
    end = next(n for n in range(start, len(lines)) if not lines[n].startswith("# "))
    example = "\n".join(line.removeprefix("# ") for line in lines[start:end])
    monkeypatch.setenv("REDMINE_API_KEY", "k3y")
    [route] = parse_config(example, "c.toml").routes
    assert (route.name, [str(m) for m in route.matchers]) == ("payroll", ['service="payroll"'])
    assert (route.helpdesk.kind, route.helpdesk.options.project) == ("redmine", "payroll")
    assert route.helpdesk.options.api_key == "k3y" and "k3y" not in repr(route)


# --- build_options: any dataclass from a table ---------------------------------------------------


@dataclass(frozen=True)
class Knobs:
    url: str
    retries: int = 3
    ratio: float = 0.5
    verbose: bool = False
    wait: Duration = field(default=Duration(5))
    limit: Duration | None = None
    tags: list[str] = field(default_factory=list)
    ports: tuple[int, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    level: Severity = Severity.INFO

    def __post_init__(self) -> None:
        if self.retries > 10:
            raise ValueError("retries must be at most 10")


def test_build_options_coerces_by_annotation() -> None:
    errors: list[str] = []
    table = {
        "url": "u",
        "retries": 2,
        "ratio": 1,
        "verbose": True,
        "wait": "1m",
        "limit": 30,
        "tags": ["a"],
        "ports": [80, 443],
        "headers": {"Accept": "x"},
        "level": "critical",
    }
    knobs = build_options(Knobs, table, "knobs", errors)
    assert errors == []
    assert knobs == Knobs(
        "u",
        2,
        1.0,
        True,
        Duration(60),
        Duration(30),
        ["a"],
        (80, 443),
        {"Accept": "x"},
        Severity.CRITICAL,
    )
    assert knobs is not None
    assert type(knobs.ratio) is float and type(knobs.wait) is Duration


def test_build_options_reports_every_problem() -> None:
    errors: list[str] = []
    table = {
        "retries": True,
        "ratio": "x",
        "verbose": "yes",
        "wait": "soon",
        "limit": [1],
        "tags": ["a", 1, 2],
        "ports": [80, "443", 1.5],
        "headers": {"A": 1},
        "level": "loud",
        "colour": "red",
    }
    assert build_options(Knobs, table, "knobs", errors) is None
    assert errors == [
        "knobs.colour: unknown key; known keys: headers, level, limit, ports, ratio, retries, "
        "tags, url, verbose, wait",
        "knobs.url: missing required key",
        "knobs.retries: expected a whole number, got true",
        'knobs.ratio: expected a number, got "x"',
        'knobs.verbose: expected true or false, got "yes"',
        f'knobs.wait: "soon" {DURATION_HINT}',
        "knobs.limit: expected a duration, got a list; use 30s, 5m, 4h or 1d",
        "knobs.tags[2]: expected a string, got 1",
        "knobs.tags[3]: expected a string, got 2",
        'knobs.ports[2]: expected a whole number, got "443"',
        "knobs.ports[3]: expected a whole number, got 1.5",
        "knobs.headers.A: expected a string, got 1",
        'knobs.level: "loud" is not one of info, warning, critical',
    ]


def test_build_options_reports_the_dataclass_own_check() -> None:
    errors: list[str] = []
    assert build_options(Knobs, {"url": "u", "retries": 11}, "knobs", errors) is None
    assert errors == ["knobs: retries must be at most 10"]


@pytest.mark.parametrize(("port", "error"), [(0, "0 is not a TCP port"), (70000, "70000 is not")])
def test_smtp_port_range(port: int, error: str) -> None:
    [message] = errors_of(f'[smtp]\nfrom = "a@example.com"\nport = {port}\n')
    assert message.startswith(f"smtp.port: {error}") and message.endswith("(line 3)")
