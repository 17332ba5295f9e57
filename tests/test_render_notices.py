"""User notices in the audience's language, the staff escalation message and the "still open"
ticket comment: the templates and the localised filters behind them."""

from __future__ import annotations

import copy
import html
import re
from pathlib import Path
from typing import Any

import pytest

from notifiers.render import (
    Renderer,
    RenderError,
    format_clock,
    format_day,
    format_relative,
    format_span,
    format_when,
    is_today,
    notice_languages,
)

HOSTILE = "<script>alert(1)</script>"
NOW = 1763800000.0  # Saturday 2025-11-22 08:26:40 UTC, 09:26 in Rome
LANGUAGES = ["en", "it", "ru", "hu"]
INCIDENT_KINDS = ["investigating", "identified", "update", "monitoring", "resolved"]
MAINTENANCE_KINDS = ["scheduled", "in_progress", "completed"]
KINDS = INCIDENT_KINDS + MAINTENANCE_KINDS
MARKER = "[forewarn:1a2b3c4d5e6f7a8b]"
FINGERPRINT = "1a2b3c4d5e6f7a8b"

# Words that only a notice in that language says: its sign-off (every notice has one).
SIGN_OFF = {"en": "Thank you for your", "it": "La ringraziamo per la",
            "ru": "Благодарим Вас за", "hu": "Köszönjük"}
# The ETA, 2 h after NOW: 11:26 in Rome, the same day.
ETA_WORDS = {"en": "fixed by 11:26\u202fAM", "it": "entro le ore 11:26", "ru": "к 11:26",
             "hu": "11:26-ig"}
UNKNOWN_WORDS = {"en": "We don't know yet how long", "it": "Non sappiamo ancora quanto tempo",
                 "ru": "Пока мы не знаем, сколько времени", "hu": "Egyelőre nem tudjuk"}
# The usual range, 1 h to 2 h 30 min, in the language's own words and plurals.
RANGE_WORDS = {"en": "between 1 hour and 2 hours 30 minutes", "it": "tra 1 ora e 2 ore 30 minuti",
               "ru": "1 час – 2 часа 30 минут", "hu": "1 óra – 2 óra és 30 perc"}
# The maintenance window, 18:00 to 19:30 in Rome today.
WINDOW_WORDS = {"en": "from November 22, 6:00\u202fPM to 7:30\u202fPM",
                "it": "oggi dalle ore 18:00 alle ore 19:30", "ru": "сегодня с 18:00 до 19:30",
                "hu": "ma 18:00 és 19:30 között"}


def incident_context(kind: str, language: str) -> dict[str, Any]:
    return {
        "language": language, "timezone": "Europe/Rome", "kind": kind, "now": NOW,
        "audience": {"name": "accounting", "title": "Accounting"},
        "service": {"name": "erp", "title": "Gestionale", "description": "The ERP"},
        "host": "web01",
        "incident": {"id": 3, "episode": 1, "marker": MARKER, "fingerprint": FINGERPRINT,
                     "severity": "critical", "opened_at": NOW - 5400,
                     "first_opened_at": NOW - 86400, "resolved_at": None, "lasted": None,
                     "predicted_at": None, "heads_up": False, "acknowledged": False},
        "eta": {"expected_at": NOW + 7200, "median": 7200.0, "low": 3600.0, "high": 9000.0,
                "samples": 4, "basis": "target", "overdue": False},
        "next_update_at": NOW + 1800,
        "update": {"seq": 1, "reason": "cadence"} if kind == "update" else None,
        "texts": {"user_impact": "", "still_works": "Mail works.",
                  "workaround": "Use the paper forms.", "help_url": "https://wiki.example.com/erp"},
        "helpdesk": {"contact": "helpdesk@example.com or +39 06 1234"},
        "status_url": "https://status.example.com/status",
        "maintenance": None,
        "ticket": {"number": "#12", "url": None, "backend": "builtin"},
    }


def maintenance_context(kind: str, language: str) -> dict[str, Any]:
    context = incident_context(kind, language)
    context.update(incident=None, eta=None, ticket=None, update=None, next_update_at=None,
                   maintenance={"name": "backup", "title": "Nightly backup", "description": "",
                                "starts_at": NOW + 30800, "ends_at": NOW + 36200})
    return context


def context_for(kind: str, language: str) -> dict[str, Any]:
    build = maintenance_context if kind in MAINTENANCE_KINDS else incident_context
    return build(kind, language)


def bare(context: dict[str, Any]) -> dict[str, Any]:
    """Everything optional missing: no service, ticket, estimate, texts, contact, status page."""
    changed = copy.deepcopy(context)
    changed.update(service=None, eta=None, next_update_at=None, ticket=None, status_url="",
                   audience={"name": "all", "title": ""}, helpdesk={"contact": ""},
                   texts={"user_impact": "", "still_works": "", "workaround": "", "help_url": ""})
    return changed


def heads_up(context: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(context)
    changed["incident"].update(heads_up=True, predicted_at=NOW + 10800)
    return changed


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def well_formed(subject: str, text: str, page: str) -> None:
    assert subject and "\n" not in subject and subject == subject.strip()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<link" not in page and "<img" not in page and "<script" not in page
    for part in (subject, text, page):
        for leftover in ("None", "Undefined", "{{", "{%", "[]", "{}", "()"):
            assert leftover not in part, leftover
    for line in text.splitlines():
        assert "  " not in line.strip() and " ." not in line and " ," not in line, line
    assert "\n\n\n" not in text and text.endswith("\n") and not text.endswith("\n\n")


def title_of(page: str) -> str:
    found = re.search(r"<title>(.*?)</title>", page, re.S)
    assert found
    return html.unescape(found.group(1))


# --- every kind in every language ------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_notice_renders_in_its_language(
    renderer: Renderer, kind: str, language: str
) -> None:
    subject, text, page = renderer.render_notice(kind, language, context_for(kind, language))
    well_formed(subject, text, page)
    assert SIGN_OFF[language] in text and SIGN_OFF[language] in page
    assert "helpdesk@example.com or +39 06 1234" in text
    assert "https://status.example.com/status" in text
    assert " ".join(title_of(page).split()) == subject  # the headline says what the subject says
    assert f'<html lang="{language}">' in page
    if kind in INCIDENT_KINDS:
        assert "#12" in text and "#12" in page


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", ["investigating", "identified", "update"])
def test_an_active_problem_tells_when_it_will_be_fixed(
    renderer: Renderer, kind: str, language: str
) -> None:
    _, text, page = renderer.render_notice(kind, language, incident_context(kind, language))
    assert ETA_WORDS[language] in text
    assert RANGE_WORDS[language] in text
    assert "9:56" in text  # the next update, half an hour from now
    assert "Use the paper forms." in text and "https://wiki.example.com/erp" in text
    assert "Mail works." in text
    assert "11:26" in page and "9:56" in page
    _, unknown, _ = renderer.render_notice(kind, language, bare(incident_context(kind, language)))
    assert UNKNOWN_WORDS[language] in unknown
    assert ETA_WORDS[language] not in unknown


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_notice_without_optional_parts_still_reads_well(
    renderer: Renderer, kind: str, language: str
) -> None:
    context = bare(context_for(kind, language))
    subject, text, page = renderer.render_notice(kind, language, context)
    well_formed(subject, text, page)
    assert "Gestionale" not in text and "#12" not in text and "https://" not in text
    assert SIGN_OFF[language] in text


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", INCIDENT_KINDS)
@pytest.mark.parametrize("reason", ["cadence", "eta", "relapse"])
def test_heads_up_and_every_update_reason_render(
    renderer: Renderer, kind: str, language: str, reason: str
) -> None:
    context = incident_context(kind, language)
    context["update"] = {"seq": 2, "reason": reason}
    for variant in (context, heads_up(context)):
        well_formed(*renderer.render_notice(kind, language, variant))


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_heads_up_says_when_trouble_may_start_and_that_all_works_now(
    renderer: Renderer, language: str
) -> None:
    context = incident_context("investigating", language)
    plain = renderer.render_notice("investigating", language, context)
    ahead = renderer.render_notice("investigating", language, heads_up(context))
    assert ahead[0] != plain[0]  # its own subject
    assert "12:26" in ahead[1]  # the predicted impact, 3 h from now in Rome
    assert "12:26" not in plain[1]


@pytest.mark.parametrize(
    ("language", "named"),
    [("en", "There is a problem with Gestionale.\nPages may not open.\n"),
     ("it", "C'è un problema con Gestionale.\nPages may not open.\n"),
     ("ru", "Возникла проблема в работе сервиса «Gestionale».\nPages may not open.\n"),
     ("hu", "Hiba lépett fel a következő szolgáltatásban: Gestionale.\nPages may not open.\n")],
)
def test_the_rules_own_words_come_with_the_service_name(
    renderer: Renderer, language: str, named: str
) -> None:
    context = incident_context("investigating", language)
    context["texts"]["user_impact"] = "Pages may not open."
    _, text, _ = renderer.render_notice("investigating", language, context)
    assert named in text
    assert "may be slow" not in text  # the rule's words replace the generic sentence


@pytest.mark.parametrize(
    ("language", "lasted"),
    [("en", "It lasted 1 hour 30 minutes."), ("it", "Il disservizio è durato 1 ora 30 minuti."),
     ("ru", "Сбой длился 1 час 30 минут."), ("hu", "A hiba 1 óra és 30 perc ideig tartott.")],
)
def test_resolved_says_how_long_it_lasted(renderer: Renderer, language: str, lasted: str) -> None:
    context = incident_context("resolved", language)
    context["incident"].update(resolved_at=NOW, lasted=5400.0)
    _, text, _ = renderer.render_notice("resolved", language, context)
    assert lasted in text


@pytest.mark.parametrize("language", LANGUAGES)
def test_scheduled_maintenance_says_when_and_how_long(renderer: Renderer, language: str) -> None:
    subject, text, _ = renderer.render_notice(
        "scheduled", language, maintenance_context("scheduled", language)
    )
    assert WINDOW_WORDS[language] in text
    assert "Nightly backup" in text and "Gestionale" in text
    assert re.search(r"22\.? (novembre|ноября)|november 22", subject, re.IGNORECASE)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("cadence", "It has been going on for 1 hour 30 minutes."),
     ("eta", "Our estimate of when the problem will be fixed has changed"),
     ("relapse", "The problem we told you about earlier has come back")],
)
def test_update_says_why_it_was_sent(renderer: Renderer, reason: str, expected: str) -> None:
    context = incident_context("update", "en")
    context["update"]["reason"] = reason
    assert expected in renderer.render_notice("update", "en", context)[1]


def test_an_overdue_estimate_says_it_takes_longer(renderer: Renderer) -> None:
    context = incident_context("investigating", "en")
    context["eta"]["overdue"] = True
    _, text, _ = renderer.render_notice("investigating", "en", context)
    assert "This is taking longer than usual." in text and "usually take" not in text


# --- nothing technical, nothing unescaped ------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_no_technical_field_leaks(renderer: Renderer, kind: str, language: str) -> None:
    for context in (context_for(kind, language), bare(context_for(kind, language))):
        rendered = " ".join(renderer.render_notice(kind, language, context))
        for technical in (MARKER, FINGERPRINT, "forewarn", "web01", "critical", "builtin"):
            assert technical not in rendered, technical


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_html_escapes_every_value_and_text_keeps_it(
    renderer: Renderer, kind: str, language: str
) -> None:
    context = context_for(kind, language)
    context["audience"]["title"] = HOSTILE
    context["service"]["title"] = HOSTILE
    context["texts"] = {key: HOSTILE for key in context["texts"]}
    context["helpdesk"]["contact"] = HOSTILE
    subject, text, page = renderer.render_notice(kind, language, context)
    assert "<script" not in page and "&lt;script&gt;" in page
    assert HOSTILE in text and HOSTILE in subject


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("field", ["user_impact", "audience", "service"])
def test_each_hostile_field_shows_escaped(renderer: Renderer, language: str, field: str) -> None:
    context = incident_context("investigating", language)
    if field == "user_impact":
        context["texts"]["user_impact"] = HOSTILE
    else:
        context[field]["title"] = HOSTILE
    _, _, page = renderer.render_notice("investigating", language, context)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script" not in page


def test_only_web_addresses_become_links(renderer: Renderer) -> None:
    context = incident_context("investigating", "en")
    context["texts"]["help_url"] = "javascript:alert(1)"
    _, _, page = renderer.render_notice("investigating", "en", context)
    assert 'href="javascript' not in page and "javascript:alert(1)" in page
    assert '<a href="https://status.example.com/status"' in page


# --- languages: fallback and overrides -------------------------------------------------------


def test_a_language_without_templates_falls_back_to_english(renderer: Renderer) -> None:
    english = renderer.render_notice("investigating", "en", incident_context("investigating", "en"))
    german = renderer.render_notice("investigating", "de", incident_context("investigating", "de"))
    assert german == english  # English words, so English dates too
    assert 'lang="en"' in german[2]


def test_a_regional_language_keeps_its_formats_on_the_base_templates(renderer: Renderer) -> None:
    context = incident_context("investigating", "en_GB")
    _, text, page = renderer.render_notice("investigating", "en-GB", context)
    assert "fixed by 11:26." in text and "AM" not in text
    assert 'lang="en-GB"' in page


@pytest.mark.parametrize(
    ("language", "tried"),
    [("it", ["it", "en"]), ("pt-BR", ["pt_BR", "pt", "en"]), ("en", ["en"]),
     ("../../etc", ["en"]), ("", ["en"])],
)
def test_notice_languages_tried_in_order(language: str, tried: list[str]) -> None:
    assert notice_languages(language) == tried


def write(directory: Path, name: str, text: str) -> None:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_an_override_wins_and_the_rest_comes_from_the_package(tmp_path: Path) -> None:
    write(tmp_path, "notices/it/resolved.subject.j2", "Tutto a posto: {{ service.title }}")
    renderer = Renderer(str(tmp_path))
    subject, text, _ = renderer.render_notice("resolved", "it", incident_context("resolved", "it"))
    assert subject == "Tutto a posto: Gestionale"
    assert text.startswith("Gentile Accounting,")  # the package's Italian text


def test_a_sysadmin_adds_a_language_by_dropping_files(tmp_path: Path) -> None:
    write(tmp_path, "notices/de/investigating.subject.j2",
          "Störung {{ service.title }}: Behebung bis {{ eta.expected_at|when(with_date=true) }}")
    renderer = Renderer(str(tmp_path))
    context = incident_context("investigating", "de")
    subject, text, _ = renderer.render_notice("investigating", "de", context)
    assert subject == "Störung Gestionale: Behebung bis 22. November, 11:26"
    assert "We are aware of the problem" in text  # no German text yet: the English one


def test_a_broken_or_unknown_notice_is_a_render_error(tmp_path: Path) -> None:
    write(tmp_path, "notices/it/resolved.txt.j2", "{% if %}")
    renderer = Renderer(str(tmp_path))
    with pytest.raises(RenderError, match=r"notices/it/resolved\.txt\.j2"):
        renderer.render_notice("resolved", "it", incident_context("resolved", "it"))
    with pytest.raises(RenderError, match="nope"):
        renderer.render_notice("nope", "en", incident_context("resolved", "en"))
    with pytest.raises(RenderError, match="not a template name"):
        renderer.render_notice("../user_outage", "en", incident_context("resolved", "en"))


# --- the localised filters ---------------------------------------------------------------

T = 1763807200.0  # 2025-11-22 10:26:40 UTC: 11:26 in Rome, 05:26 in New York, 19:26 in Tokyo
DAY = 86400.0


@pytest.mark.parametrize(
    ("language", "zone", "now", "expected"),
    [("it", "Europe/Rome", T - 3600, "11:26"),
     ("en", "Europe/Rome", T - 3600, "11:26\u202fAM"),
     ("en", "America/New_York", T - DAY, "November 22, 5:26\u202fAM"),
     ("it", "Europe/Rome", T - DAY, "22 novembre, 11:26"),
     ("ru", "Europe/Rome", T - DAY, "22 ноября, 11:26"),
     ("hu", "Asia/Tokyo", T - DAY, "november 22. 19:26"),
     ("it", "Europe/Rome", T - 400 * DAY, "22 nov 2025, 11:26"),
     ("it", "Europe/Rome", None, "22 nov 2025, 11:26"),
     ("xx", "Nowhere/Atlantis", T, "10:26\u202fAM")],  # unknown: English and UTC
)
def test_when(language: str, zone: str, now: float | None, expected: str) -> None:
    assert format_when(T, language, zone, now) == expected


def test_when_with_date_and_without_a_time() -> None:
    assert format_when(T, "it", "Europe/Rome", T, with_date=True) == "22 novembre, 11:26"
    assert format_when(None, "it", "Europe/Rome", T) == ""
    assert format_day(T, "ru", "Europe/Rome", T) == "22 ноября"
    assert format_clock(T, "hu", "Asia/Tokyo") == "19:26"


def test_today_is_a_day_in_the_readers_zone() -> None:
    late = 1763854200.0  # 2025-11-22 23:30 UTC: already the 23rd in Rome
    assert is_today(late, "UTC", NOW) and not is_today(late, "Europe/Rome", NOW)
    assert not is_today(None, "UTC", NOW) and not is_today(late, "UTC", None)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(7200, ["2 hours", "2 ore", "2 часа", "2 óra"]),
     (5 * 3600, ["5 hours", "5 ore", "5 часов", "5 óra"]),
     (5400, ["1 hour 30 minutes", "1 ora 30 minuti", "1 час 30 минут", "1 óra és 30 perc"]),
     (190, ["3 minutes", "3 minuti", "3 минуты", "3 perc"]),
     (20, ["20 seconds", "20 secondi", "20 секунд", "20 másodperc"]),
     (3660, ["1 hour", "1 ora", "1 час", "1 óra"]),  # minutes to 5 once it is hours
     (93600, ["1 day 2 hours", "1 giorno 2 ore", "1 день 2 часа", "1 nap és 2 óra"]),
     (10 * DAY, ["1 week 3 days", "1 settimana 3 giorni", "1 неделя 3 дня", "1 hét és 3 nap"]),
     (40 * DAY, ["1 month", "1 mese", "1 месяц", "1 hónap"]),
     (None, ["", "", "", ""])],
)
def test_span(seconds: float | None, expected: list[str]) -> None:
    assert [format_span(seconds, language) for language in LANGUAGES] == expected


def test_relative() -> None:
    assert format_relative(T, T - 3 * 3600, "it") == "tra 3 ore"
    assert format_relative(T, T + 7200, "ru") == "2 часа назад"
    assert format_relative(T, T - 3 * 3600, "hu") == "3 óra múlva"
    assert format_relative(T, None, "en") == ""


def test_filters_read_language_zone_and_now_from_the_context(tmp_path: Path) -> None:
    write(tmp_path, "probe.txt.j2", "{{ t|when }}|{{ t|day }}|{{ t|clock }}|{{ 7200|span }}|"
          "{{ t|relative }}|{{ t is today }}|{{ t is same_day(t - 3600) }}")
    renderer = Renderer(str(tmp_path))
    context = {"language": "ru", "timezone": "Asia/Tokyo", "now": T - DAY, "t": T}
    assert renderer.render_text("probe.txt.j2", context) == (
        "22 ноября, 19:26|22 ноября|19:26|2 часа|через 1 день|False|True"
    )
    assert renderer.render_text("probe.txt.j2", {"t": T}) == (
        "Nov 22, 2025, 10:26\u202fAM|Nov 22, 2025|10:26\u202fAM|2 hours||False|True"
    )


# --- staff: escalation and the "still open" comment --------------------------------------

STAFF: dict[str, Any] = {
    "host": "web01",
    "incident": {"id": 3, "episode": 1, "fingerprint": FINGERPRINT, "marker": MARKER,
                 "severity": "critical", "priority": "high", "opened_at": NOW,
                 "status": "open", "predicted_at": NOW + 11400},
    "alert": {"rule": "disk_filling", "summary": "Disk / is filling", "labels": {"mountpoint": "/"},
              "runbook": "https://wiki.example.com/disk"},
    "service": "intranet",
    "ticket": {"number": "#12", "url": "https://helpdesk.example.com/t/12"},
    "helpdesk": {"contact": "helpdesk@example.com"},
    "step": {"index": 1, "round": 0, "position": 2, "of": 3, "urgent": False,
             "policy": "default", "started_at": NOW},
    "acknowledge": "forewarn incidents ack 3",
    "now": NOW + 3600,
}


def staff(**changes: Any) -> dict[str, Any]:
    context = copy.deepcopy(STAFF)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(context.get(key), dict):
            context[key].update(value)
        else:
            context[key] = value
    return context


def test_escalation_says_who_must_act_and_how(renderer: Renderer) -> None:
    subject, text, page = renderer.render_message("escalation", STAFF)
    assert subject == f"[#12] Unacknowledged: CRITICAL disk_filling on web01 (step 2/3) {MARKER}"
    assert text.startswith("Ticket #12: https://helpdesk.example.com/t/12\n")
    for expected in ("Nobody has acknowledged this incident yet.", "unacknowledged for 1 h",
                     'Escalation step 2 of 3 of policy "default"',
                     "  forewarn incidents ack 3\n", "Disk / is filling on web01 (intranet)",
                     "https://wiki.example.com/disk", MARKER):
        assert expected in text, expected
    assert "URGENT" not in text
    assert page is not None and "forewarn incidents ack 3</pre>" in page


def test_urgent_escalation_names_the_time_users_are_hit(renderer: Renderer) -> None:
    subject, text, page = renderer.render_message("escalation", staff(step={"urgent": True}))
    assert subject.startswith("[#12] URGENT Unacknowledged:")
    assert text.startswith("Ticket #12: https://helpdesk.example.com/t/12\n\nURGENT: ")
    assert "affected at 2025-11-22 11:36 UTC (in 2 h 10 min)" in text
    assert page is not None and "Urgent: unacknowledged" in page


def test_escalation_without_ticket_or_now_or_prediction(renderer: Renderer) -> None:
    context = staff(ticket=None, step={"urgent": True, "round": 1}, incident={"predicted_at": None})
    del context["now"]
    subject, text, page = renderer.render_message("escalation", context)
    assert subject.startswith("URGENT Unacknowledged:")
    assert "users are expected to be affected soon." in text and "(round 2)" in text
    assert "unacknowledged for" not in text and "ticket" not in text.lower()
    for part in (subject, text, page or ""):
        assert "None" not in part and "Undefined" not in part


def test_escalation_html_is_escaped(renderer: Renderer) -> None:
    context = staff(alert={"summary": HOSTILE}, step={"policy": HOSTILE})
    _, text, page = renderer.render_message("escalation", context)
    assert page is not None and "<script" not in page and "&lt;script&gt;" in page
    assert HOSTILE in text


def test_still_open_comment(renderer: Renderer) -> None:
    context = staff(open_for=93600.0, notices_sent=3, escalation_steps=2,
                    eta={"expected_at": NOW + 7200, "median": 7200.0, "low": 3600.0,
                         "high": 9000.0, "samples": 4, "basis": "target", "overdue": True})
    text = renderer.render_text("ticket_still_open.txt.j2", context)
    assert text.startswith("Still open after 1 d 2 h: Disk / is filling on web01.\n")
    for expected in ("Expected fix:     2025-11-22 10:26 UTC, already longer than usual "
                     "(past fixes took 1 h to 2 h 30 min, 4 incidents)",
                     "User notices:     3 sent", "Escalation steps: 2 fired"):
        assert expected in text, expected
    assert text.rstrip().endswith(MARKER)
    unknown = renderer.render_text(
        "ticket_still_open.txt.j2", staff(open_for=60.0, eta=None, notices_sent=0,
                                          escalation_steps=0),
    )
    assert "Expected fix:     unknown" in unknown and "None" not in unknown
