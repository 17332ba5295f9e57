"""The config of audiences, services, notices, escalation and the status page."""

from __future__ import annotations

from datetime import date, time

import pytest

from monitor.comms import apprise_targets, comms_settings
from monitor.config import ConfigError, parse_config
from notifiers.apprise_channel import target_id

BASE = """
[smtp]
host = "127.0.0.1"
from = "forewarn@example.com"

[[probe]]
name = "web"
kind = "http"
url = "http://127.0.0.1:9/"

[[rule]]
name = "erp_down"
metric = "http_up"
condition = "value == 0"
service = "erp"
notify_users = true
escalation = "oncall"
user_impact.en = "You may not be able to open the accounting program."
user_impact.it = "Il gestionale potrebbe non aprirsi."
workaround = "Use the web version at https://erp.example.com/web"
"""

FULL = (
    BASE
    + """
[notices]
update_every = "2h"
monitor_for = "10m"
timezone = "Europe/Rome"
language = "it"
status_url = "https://status.example.com/status"

[[service]]
name = "erp"
title = { en = "Accounting", it = "Contabilità" }

[[audience]]
name = "accounting"
title = "Accounting team"
services = ["erp"]
email = ["acct@example.com"]
language = "hu"

[[audience]]
name = "oncall"
hosts = ["web-*"]
apprise = ["json://127.0.0.1:8080/hook", { env = "CHAT_URL" }]

[[escalation]]
name = "oncall"
repeat = 1
repeat_every = "2h"

[escalation.business_hours]
days = "mon-fri"
start = "08:00"
end = "18:00"
timezone = "Europe/Rome"
holidays = "IT"
extra_holidays = ["2026-12-24"]

[[escalation.step]]
after = "0s"
notify = ["helpdesk@example.com"]

[[escalation.step]]
after = "30m"
notify = ["oncall"]
business_hours_only = true

[status]
title = "ACME status"
"""
)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.toml")
    return caught.value.errors


def test_full_comms_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_URL", "tgram://secret-token/123")
    config = parse_config(FULL, "c.toml")
    comms = config.comms
    assert comms.notices.cadence.update_every == 7200
    assert comms.notices.cadence.monitor_for == 600
    assert comms.service("erp").title_in("it") == "Contabilità"
    assert comms.service("mail").title_in("en") == "mail"  # not declared: its name
    accounting, oncall = comms.audiences
    assert accounting.language == "hu"
    assert oncall.language == "it"  # [notices] language, for those that set none
    assert oncall.apprise == ("json://127.0.0.1:8080/hook", "tgram://secret-token/123")
    [policy] = comms.escalations
    assert [step.after for step in policy.steps] == [0, 1800]
    assert policy.steps[1].business_hours_only and policy.repeat == 1
    assert policy.hours is not None
    assert (policy.hours.start, policy.hours.end) == (time(8), time(18))
    assert policy.hours.is_holiday(date(2026, 12, 24))  # an extra day off
    assert policy.hours.is_holiday(date(2026, 12, 25))  # Italy's calendar
    assert not policy.hours.is_holiday(date(2026, 12, 23))
    rule = next(r for r in config.rules if r.name == "erp_down")
    assert rule.user_impact.get("it") == "Il gestionale potrebbe non aprirsi."
    assert rule.workaround.get("hu").startswith("Use the web version")  # written once
    assert comms.policy(rule.escalation) is policy
    assert comms.status.title == "ACME status"


def test_apprise_urls_become_ids_so_the_state_file_holds_no_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHAT_URL", "tgram://secret-token/123")
    settings = comms_settings(parse_config(FULL, "c.toml"))
    targets = apprise_targets(settings)
    assert targets[target_id("tgram://secret-token/123")] == "tgram://secret-token/123"
    assert all("secret" not in key for key in targets)


def test_legacy_notify_users_is_an_audience_of_everything() -> None:
    config = parse_config(BASE.replace('escalation = "oncall"\n', "") + NOTIFY_USERS, "c.toml")
    [users] = comms_settings(config).audiences
    assert users.email == ("users@example.com",) and users.services == ("*",)


NOTIFY_USERS = """
[notify]
users = ["users@example.com"]
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            '[[audience]]\nname = "a"\nservices = ["erp"]\n',
            "audience[1] (a): give `email` addresses or `apprise` URLs",
        ),
        (
            '[[audience]]\nname = "a"\nemail = ["a@example.com"]\n',
            "audience[1] (a): give the `services` they depend on or the `hosts` they use",
        ),
        (
            '[[audience]]\nname = "a"\nservices = ["ERP"]\nemail = ["a@example.com"]\n',
            'audience[1] (a).services[1]: no rule and no [[service]] names "ERP"',
        ),
        (
            '[[audience]]\nname = "a"\nservices = ["*"]\nemail = ["a@example.com"]\n'
            'language = "klingon"\n',
            'audience[1] (a).language: "klingon" is not a language code',
        ),
        (
            '[[audience]]\nname = "a"\nservices = ["*"]\napprise = ["slack"]\n',
            "audience[1] (a).apprise[1]: not an Apprise URL",
        ),
        (
            '[[audience]]\nname = "a"\nservices = ["*"]\napprise = [{ env = "NOPE_UNSET" }]\n',
            "audience[1] (a).apprise[1]: environment variable NOPE_UNSET is not set",
        ),
        ('[notices]\ntimezone = "Mars/Olympus"\n', "notices.timezone"),
        ('[notices]\nupdate_every = "often"\n', "notices.update_every"),
        ("[status]\nenabled = 1\n", "status.enabled: expected true or false"),
        (
            '[[escalation]]\nname = "oncall"\n',
            "escalation[1] (oncall).step: give at least one [[escalation.step]]",
        ),
        (
            '[[escalation]]\nname = "oncall"\n[[escalation.step]]\nnotify = ["nobody"]\n',
            'escalation[1] (oncall).step[1].notify[1]: "nobody" is neither an [[audience]]',
        ),
        (
            '[[escalation]]\nname = "oncall"\n[escalation.business_hours]\ndays = "weekdays"\n'
            '[[escalation.step]]\nnotify = ["a@example.com"]\n',
            'escalation[1] (oncall).business_hours.days: "weekdays" is not a list of days',
        ),
        (
            '[[escalation]]\nname = "oncall"\n[escalation.business_hours]\nholidays = "XX"\n'
            '[[escalation.step]]\nnotify = ["a@example.com"]\n',
            'escalation[1] (oncall).business_hours.holidays: "XX" is not a country',
        ),
        (
            '[[escalation]]\nname = "oncall"\n[escalation.business_hours]\nstart = "8am"\n'
            '[[escalation.step]]\nnotify = ["a@example.com"]\n',
            'escalation[1] (oncall).business_hours.start: "8am" is not a time of day',
        ),
    ],
)
def test_comms_errors_name_their_path(extra: str, expected: str) -> None:
    text = BASE.replace('escalation = "oncall"\n', "") if "escalation" not in extra else BASE
    errors = errors_of(text + extra)
    assert any(expected in error for error in errors), errors


def test_a_rule_naming_a_missing_policy() -> None:
    errors = errors_of(BASE)
    assert any(
        'rule[1] (erp_down).escalation: no [[escalation]] is named "oncall"' in e for e in errors
    )


def test_translations_must_be_keyed_by_language() -> None:
    text = BASE.replace('escalation = "oncall"\n', "").replace(
        'workaround = "Use', 'still_works = { English = "x" }\nworkaround = "Use'
    )
    errors = errors_of(text)
    assert any(
        "rule[1] (erp_down).still_works.English: expected a language code" in e for e in errors
    )


def test_escalation_to_an_address_needs_smtp() -> None:
    text = BASE.replace("[smtp]", "[unused_smtp]").split("[[probe]]", 1)[1]
    text = (
        "[[probe]]"
        + text
        + ('[[escalation]]\nname = "oncall"\n[[escalation.step]]\nnotify = ["a@example.com"]\n')
    )
    errors = errors_of(text)
    assert any("step[1].notify[1]: an address, but there is no [smtp] section" in e for e in errors)


def test_policy_checks_come_from_the_policy() -> None:
    text = BASE + (
        '[[escalation]]\nname = "oncall"\nrepeat = 2\n'
        '[[escalation.step]]\nafter = "0s"\nnotify = ["a@example.com"]\n'
    )
    errors = errors_of(text)
    assert any(error.startswith("escalation[1] (oncall):") for error in errors), errors
