"""Config loading and validation: the shipped configs load, and every broken one says where."""

from __future__ import annotations

import dataclasses
import math
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from monitor.config import (
    Config,
    ConfigError,
    DaemonConfig,
    HelpdeskConfig,
    NotifyConfig,
    SmtpConfig,
    build_options,
    load_config,
    parse_config,
)
from monitor.durations import format_duration, parse_duration
from notifiers.email import SmtpSettings
from probes.base import Duration
from rules.alerts import render_summary
from rules.model import AlertState, Phase, Severity

REPO = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).resolve().parent / "data" / "configs"
DURATION_HINT = "is not a duration; use 30s, 5m, 4h or 1d"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CREDENTIALS_DIRECTORY",
        "STATE_DIRECTORY",
        "FOREWARN_SMTP_PASSWORD",
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
    by_metric = {rule.metric: rule for rule in rules.values()}
    expected = {  # metric: (condition, for, critical, clear)
        "cpu_usage_percent": ("value > 90", 600, "value > 98", None),
        "load5_per_core": ("value > 2", 900, None, None),
        "memory_used_percent": ("value > 90", 300, "value > 97", "value < 85"),
        "swap_used_percent": ("value > 80", 900, None, None),
        "disk_used_percent": ("value > 85", 300, "value > 95", "value < 80"),
        "disk_inodes_used_percent": ("value > 85", 300, "value > 95", None),
        "temperature_celsius": ("value > 85", 120, "value > 95", None),
        "probe_up": ("value == 0", 120, None, None),
    }
    assert len(rules) == len(by_metric) == len(expected)
    for metric, (condition, for_seconds, critical, clear) in expected.items():
        rule = by_metric[metric]
        assert rule.condition.source == condition
        assert rule.for_seconds == for_seconds
        assert (rule.critical.source if rule.critical else None) == critical
        assert (rule.clear.source if rule.clear else None) == clear
        assert rule.summary and rule.description and rule.category, rule.name


def alert(rule: str, value: float, labels: dict[str, str]) -> AlertState:
    return AlertState("f" * 16, rule, labels, Phase.FIRING, Severity.WARNING, 0.0, 0.0, value)


def test_default_summaries_render_for_the_agent() -> None:
    rules = {rule.metric: rule for rule in load_config(None).rules}
    cases = [
        ("disk_used_percent", 93.4, {"mountpoint": "/srv"}, "Filesystem /srv is 93% full"),
        ("probe_up", 0, {"probe": "disk", "kind": "disk"}, "Probe disk (disk) keeps failing"),
        (
            "temperature_celsius",
            88.2,
            {"sensor": "coretemp", "label": "Package id 0"},
            "coretemp Package id 0 at 88°C",
        ),
    ]
    for metric, value, labels, text in cases:
        assert render_summary(rules[metric], alert(rules[metric].name, value, labels)) == text


def test_example_config_loads_with_the_password_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FOREWARN_SMTP_PASSWORD", "s3cret")
    config = load_config(str(REPO / "config.toml"))
    assert config.smtp is not None and config.smtp.password == "s3cret"
    assert {"http", "process"} <= {probe.kind for probe in config.probes}
    assert config.notify.helpdesk and config.notify.users
    assert "s3cret" not in repr(config)


def test_example_config_needs_the_password() -> None:
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
    }  # fmt: skip


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
    assert (config.probes, config.rules, config.smtp) == ((), (), None)
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


def test_rule_defaults_and_compiled_conditions() -> None:
    [rule] = parse_config(RULE, "c.toml").rules
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
    [rule] = parse_config(text, "c.toml").rules
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
