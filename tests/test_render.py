"""Templates and the sandboxed renderer."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from notifiers.render import (
    Renderer,
    RenderError,
    format_datetime,
    format_duration,
    format_number,
)

HOSTILE = "<script>alert(1)</script>"
OPENED = 1763800000.0  # 2025-11-22 08:26:40 UTC

FULL: dict[str, Any] = {
    "host": "web01",
    "incident": {
        "id": 3, "episode": 2, "fingerprint": "1a2b3c4d5e6f7a8b",
        "marker": "[forewarn:1a2b3c4d5e6f7a8b]", "severity": "critical", "priority": "high",
        "category": "web", "opened_at": OPENED, "first_opened_at": OPENED - 86400,
        "resolved_at": OPENED + 190, "lasted": 190.0, "status": "open",
    },
    "alert": {
        "rule": "web_down", "metric": "http_up", "labels": {"url": "http://intranet/"},
        "value": 0.0, "error": "connection refused", "summary": "Intranet is not answering",
        "description": "The intranet web server does not answer.",
        "runbook": "https://wiki.example.com/runbooks/web", "condition": "value == 0",
        "clear": "value == 1", "critical": "value == 0", "for": 30.0, "since": OPENED,
        "previous_severity": "warning",
    },
    "service": "intranet",
    "ticket": {"number": "#12", "url": "https://helpdesk.example.com/t/12"},
    "helpdesk": {"contact": "helpdesk@example.com"},
    "snapshot": {
        "top_processes": [
            {"pid": 4242, "name": "java", "cpu_percent": 187.5, "memory_percent": 40.25},
        ],
        "filesystems": [{"mountpoint": "/var", "used_percent": 97.3}],
    },
}

MINIMAL: dict[str, Any] = {
    "host": "db01",
    "incident": {"id": 1, "episode": 1, "fingerprint": "ffee", "severity": "warning",
                 "priority": "medium", "opened_at": OPENED, "status": "open"},
    "alert": {"rule": "disk_full", "value": None},
    "service": "",
    "ticket": None,
    "helpdesk": {"contact": "helpdesk@example.com"},
}

PREDICTED_AT = OPENED + 11400  # 3 h 10 min after the opening: 2025-11-22 11:36 UTC


def member(summary: str, status: str, since: float, **labels: str) -> dict[str, Any]:
    until = since + 200 if status == "resolved" else None
    return {"summary": summary, "labels": labels, "status": status, "since": since,
            "until": until, "rule": "disk_filling"}


# FULL as a grouped, predicted and flapping incident: everything the rule engine adds.
ENGINE: dict[str, Any] = copy.deepcopy(FULL)
ENGINE["incident"].update(episode=1, intermittent=True, flap_changes=7, predicted_at=PREDICTED_AT)
ENGINE["alert"].update(predicted_at=PREDICTED_AT, predict=95.0, window=21600.0, flapping=True)
ENGINE["alerts"] = [
    member("Disk / is filling", "firing", OPENED, mountpoint="/"),
    member("Disk /var is filling", "resolved", OPENED + 60, mountpoint="/var"),
    member("", "firing", OPENED + 120, mountpoint="/srv"),
]

SYMPTOM_FULL: dict[str, Any] = {
    "host": "web01",
    "symptom": {"rule": "unit_down", "summary": "nginx is not running",
                "labels": {"unit": "nginx.service"}, "service": "intranet"},
    "incident": {"id": 3, "marker": "[forewarn:1a2b3c4d5e6f7a8b]"},
}
SYMPTOM_MINIMAL: dict[str, Any] = {
    "host": "db01",
    "symptom": {"rule": "unit_down", "summary": "", "labels": {}, "service": ""},
    "incident": {"id": 1, "marker": "[forewarn:ffee]"},
}

TEXT_TEMPLATES = [
    "ticket_subject.txt.j2", "ticket_body.txt.j2", "ticket_update.txt.j2",
    "ticket_resolved.txt.j2", "ticket_reopened.txt.j2",
    "ticket_alert_joined.txt.j2", "ticket_alert_left.txt.j2", "ticket_intermittent.txt.j2",
]
SYMPTOM_TEMPLATES = ["ticket_symptom.txt.j2", "ticket_symptom_recovered.txt.j2"]
HELPDESK_MESSAGES = [
    "helpdesk_opened", "helpdesk_reopened", "helpdesk_updated", "helpdesk_resolved",
]
CONTEXTS = {"full": FULL, "minimal": MINIMAL, "engine": ENGINE}
SYMPTOM_CONTEXTS = {"full": SYMPTOM_FULL, "minimal": SYMPTOM_MINIMAL}


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def with_label(context: dict[str, Any], **labels: str) -> dict[str, Any]:
    changed = copy.deepcopy(context)
    changed["alert"]["labels"] = labels
    return changed


def no_leftovers(text: str) -> None:
    """Optional fields that are missing render as nothing, not as Python's words for nothing."""
    for word in ("None", "Undefined", "{{", "{%", "[]", "{}"):
        assert word not in text


# --- every template, full and minimal context ----------------------------------------------


@pytest.mark.parametrize("context_name", CONTEXTS)
@pytest.mark.parametrize("template", TEXT_TEMPLATES)
def test_text_templates_render(renderer: Renderer, template: str, context_name: str) -> None:
    context = CONTEXTS[context_name]
    text = renderer.render_text(template, context)
    # the subject names the host; every ticket text carries the marker to find it again
    expected = context["host"]
    if template != "ticket_subject.txt.j2":
        expected = "[forewarn:1a2b3c4d5e6f7a8b]" if context is not MINIMAL else "[forewarn:ffee]"
    assert expected in text
    no_leftovers(text)


@pytest.mark.parametrize("context_name", CONTEXTS)
@pytest.mark.parametrize("name", HELPDESK_MESSAGES)
def test_messages_render_subject_text_and_html(
    renderer: Renderer, name: str, context_name: str
) -> None:
    subject, text, html = renderer.render_message(name, CONTEXTS[context_name])
    assert subject and "\n" not in subject and subject == subject.strip()
    assert text.strip()
    assert html is not None
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<link" not in html and "<script" not in html  # self-contained
    for part in (subject, text, html):
        no_leftovers(part)


def test_ticket_subject_is_one_line(renderer: Renderer) -> None:
    subject = renderer.render_text("ticket_subject.txt.j2", FULL)
    assert subject == "(again) [CRITICAL] Intranet is not answering on web01 (intranet)"
    assert renderer.render_line("ticket_subject.txt.j2", MINIMAL) == "[WARNING] disk_full on db01"


def test_ticket_body_tells_the_agent_everything(renderer: Renderer) -> None:
    body = renderer.render_text("ticket_body.txt.j2", FULL)
    for expected in (
        "Intranet is not answering", "since", "2025-11-22 08:26 UTC", "http_up = 0",
        "value == 0, held for 30 s", "Clears when: value == 1", "connection refused",
        "url = http://intranet/", "https://wiki.example.com/runbooks/web",
        "java", "187.5", "97.3 % used  /var", "[forewarn:1a2b3c4d5e6f7a8b]",
    ):
        assert expected.lower() in body.lower(), expected


def test_marker_comes_from_the_fingerprint_when_not_given(renderer: Renderer) -> None:
    body = renderer.render_text("ticket_body.txt.j2", MINIMAL)
    assert body.rstrip().endswith("[forewarn:ffee]")
    assert "no value" not in body  # no metric: no "Measured" line at all


def test_update_names_old_and_new_severity(renderer: Renderer) -> None:
    text = renderer.render_text("ticket_update.txt.j2", FULL)
    assert text.startswith("Severity changed from warning to critical (priority high).")


def test_resolved_says_how_long_it_lasted(renderer: Renderer) -> None:
    text = renderer.render_text("ticket_resolved.txt.j2", FULL)
    assert "Lasted:      3 min 10 s" in text
    assert "Resolved at 2025-11-22 08:29 UTC" in text


def test_reopened_names_the_episode(renderer: Renderer) -> None:
    text = renderer.render_text("ticket_reopened.txt.j2", FULL)
    assert "episode 2" in text
    assert "first seen 2025-11-21 08:26 UTC" in text


@pytest.mark.parametrize("name", HELPDESK_MESSAGES)
def test_helpdesk_subjects_carry_ticket_number_and_marker(renderer: Renderer, name: str) -> None:
    subject, _, _ = renderer.render_message(name, FULL)
    assert subject.startswith("[#12] ")
    assert subject.endswith(" [forewarn:1a2b3c4d5e6f7a8b]")
    assert "web_down on web01" in subject
    bare, _, _ = renderer.render_message(name, MINIMAL)
    assert "[#" not in bare and bare.endswith("[forewarn:ffee]")


def test_helpdesk_opened_subject_reads_well(renderer: Renderer) -> None:
    subject, text, _ = renderer.render_message("helpdesk_opened", FULL)
    assert subject == "[#12] CRITICAL web_down on web01 [forewarn:1a2b3c4d5e6f7a8b]"
    assert text.startswith("Ticket #12: https://helpdesk.example.com/t/12\n")


# --- prediction, grouping, flapping, dependencies -------------------------------------------


TREND = "at the rate of the last 6 h it reaches 95 at 2025-11-22 11:36 UTC (in 3 h 10 min)"


def engine_with(**alert: Any) -> dict[str, Any]:
    changed = copy.deepcopy(ENGINE)
    changed["alert"].update(alert)
    return changed


@pytest.mark.parametrize("template", ["ticket_body.txt.j2", "ticket_reopened.txt.j2"])
def test_ticket_tells_when_the_trend_reaches_the_limit(renderer: Renderer, template: str) -> None:
    assert f"  Trend:       {TREND}\n" in renderer.render_text(template, ENGINE)


def test_helpdesk_mail_tells_the_trend_in_text_and_html(renderer: Renderer) -> None:
    _, text, html = renderer.render_message("helpdesk_opened", ENGINE)
    assert f"Trend:       {TREND}" in text
    assert html is not None
    assert f'>Trend</th><td style="padding:4px 0;vertical-align:top;">{TREND}</td>' in html


@pytest.mark.parametrize("context", [FULL, MINIMAL, engine_with(predicted_at=None)])
def test_no_trend_line_without_a_prediction(renderer: Renderer, context: dict[str, Any]) -> None:
    _, text, html = renderer.render_message("helpdesk_opened", context)
    for part in (renderer.render_text("ticket_body.txt.j2", context), text, html or ""):
        assert "Trend" not in part and "reaches" not in part


def test_trend_counts_from_the_evaluation_when_given(renderer: Renderer) -> None:
    # the alert was evaluated an hour after the incident opened (a ticket opened late)
    body = renderer.render_text("ticket_body.txt.j2", engine_with(evaluated_at=OPENED + 3600))
    assert "reaches 95 at 2025-11-22 11:36 UTC (in 2 h 10 min)" in body


@pytest.mark.parametrize(
    ("alert", "expected"),
    [({"predicted_at": OPENED}, "Trend:       the trend of the last 6 h is already past 95\n"),
     ({"window": 0.0, "predict": None}, "Trend:       at the current rate it reaches its limit at"),
     ({"predict": 0.0}, "it reaches 0 at 2025-11-22 11:36 UTC")],
)
def test_trend_line_variants(renderer: Renderer, alert: dict[str, Any], expected: str) -> None:
    assert expected in renderer.render_text("ticket_body.txt.j2", engine_with(**alert))


GROUP_LINES = (
    "  * Disk / is filling (mountpoint=/): firing since 2025-11-22 08:26 UTC\n",
    "  * Disk /var is filling (mountpoint=/var): recovered at 2025-11-22 08:31 UTC\n",
    "  * disk_filling (mountpoint=/srv): firing since 2025-11-22 08:28 UTC\n",
)


def test_ticket_of_a_group_lists_every_alert(renderer: Renderer) -> None:
    body = renderer.render_text("ticket_body.txt.j2", ENGINE)
    assert "Affected (3 alerts, one ticket for all of them):\n" + "".join(GROUP_LINES) in body
    _, _, html = renderer.render_message("helpdesk_opened", ENGINE)
    assert html is not None and "Affected (3 alerts" in html
    assert "<code>mountpoint=/var</code>" in html and "recovered at 2025-11-22 08:31 UTC" in html


def test_a_single_alert_is_no_list(renderer: Renderer) -> None:
    context = dict(ENGINE, alerts=ENGINE["alerts"][:1])
    assert "Affected" not in renderer.render_text("ticket_body.txt.j2", context)
    assert "Affected" not in (renderer.render_message("helpdesk_opened", context)[2] or "")


def test_joined_names_the_newcomer_and_lists_all(renderer: Renderer) -> None:
    text = renderer.render_text("ticket_alert_joined.txt.j2", ENGINE)
    assert text.startswith(
        "Another alert joined this incident: Intranet is not answering (url=http://intranet/)"
    )
    assert "Now affected (3 alerts, 2 firing):\n" + "".join(GROUP_LINES) in text


def test_left_names_the_recovered_and_lists_those_still_firing(renderer: Renderer) -> None:
    text = renderer.render_text("ticket_alert_left.txt.j2", ENGINE)
    assert text.startswith("Recovered: Intranet is not answering (url=http://intranet/).\n")
    assert "2 other alerts of this problem still fire:\n" + GROUP_LINES[0] + GROUP_LINES[2] in text
    assert "/var" not in text  # recovered earlier: not listed as going on


def test_left_with_one_other_alert_firing(renderer: Renderer) -> None:
    context = dict(ENGINE, alerts=ENGINE["alerts"][:2])
    text = renderer.render_text("ticket_alert_left.txt.j2", context)
    assert "1 other alert of this problem still fires:\n" + GROUP_LINES[0] in text


def test_intermittent_counts_the_state_changes(renderer: Renderer) -> None:
    text = renderer.render_text("ticket_intermittent.txt.j2", ENGINE)
    assert text.startswith("Flapping: Intranet is not answering on web01.\n")
    assert "(7 state changes in its recent checks)" in text
    assert "keeps this one ticket open until it settles" in text and "tagged intermittent" in text
    unknown = copy.deepcopy(ENGINE)
    unknown["incident"]["flap_changes"] = 0
    text = renderer.render_text("ticket_intermittent.txt.j2", unknown)
    assert "keeps coming and going.\n" in text and "state changes" not in text


def test_ticket_of_an_intermittent_incident_says_so(renderer: Renderer) -> None:
    assert "Intermittent: this problem keeps coming" in renderer.render_text(
        "ticket_body.txt.j2", ENGINE
    )
    _, _, html = renderer.render_message("helpdesk_opened", ENGINE)
    assert html is not None and "<strong>Intermittent:</strong>" in html
    assert "ntermittent" not in renderer.render_text("ticket_body.txt.j2", FULL)


@pytest.mark.parametrize("context_name", SYMPTOM_CONTEXTS)
@pytest.mark.parametrize("template", SYMPTOM_TEMPLATES)
def test_symptom_templates_render_with_their_own_context(
    renderer: Renderer, template: str, context_name: str
) -> None:
    context = SYMPTOM_CONTEXTS[context_name]
    text = renderer.render_text(template, context)
    assert text.rstrip().endswith(context["incident"]["marker"])
    no_leftovers(text)


def test_symptom_is_reported_on_the_root_ticket(renderer: Renderer) -> None:
    text = renderer.render_text("ticket_symptom.txt.j2", SYMPTOM_FULL)
    assert text.startswith("Also affected (a symptom of this problem): nginx is not running\n")
    for expected in ("Service:     intranet", "Rule:        unit_down", "unit = nginx.service"):
        assert expected in text
    minimal = renderer.render_text("ticket_symptom.txt.j2", SYMPTOM_MINIMAL)
    assert minimal.startswith("Also affected (a symptom of this problem): unit_down\n")


def test_symptom_recovery_is_reported_on_the_root_ticket(renderer: Renderer) -> None:
    text = renderer.render_text("ticket_symptom_recovered.txt.j2", SYMPTOM_FULL)
    assert text.startswith("Recovered: nginx is not running\n")
    assert "the ticket stays open for the problem itself" in text


# --- escaping ----------------------------------------------------------------------------


def test_html_escapes_a_hostile_label_and_text_keeps_it(renderer: Renderer) -> None:
    context = with_label(FULL, url=HOSTILE)
    _, text, html = renderer.render_message("helpdesk_opened", context)
    assert html is not None
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert f"url = {HOSTILE}" in text
    assert f"url = {HOSTILE}" in renderer.render_text("ticket_body.txt.j2", context)


def test_hostile_labels_of_grouped_alerts_stay_escaped_in_html(renderer: Renderer) -> None:
    context = copy.deepcopy(ENGINE)
    context["alerts"][0]["labels"] = {"mountpoint": HOSTILE}
    context["alerts"][1]["summary"] = HOSTILE
    _, text, html = renderer.render_message("helpdesk_opened", context)
    assert html is not None and HOSTILE not in html
    assert "mountpoint=&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<li style=\"margin:0 0 4px 0;\">&lt;script&gt;" in html
    assert f"(mountpoint={HOSTILE})" in text and f"  * {HOSTILE} (mountpoint=/var)" in text
    for template in ("ticket_alert_joined.txt.j2", "ticket_body.txt.j2"):
        assert f"(mountpoint={HOSTILE})" in renderer.render_text(template, context)


def test_hostile_alert_labels_stay_literal_in_comments(renderer: Renderer) -> None:
    context = with_label(ENGINE, url=HOSTILE)
    for template in ("ticket_alert_joined.txt.j2", "ticket_alert_left.txt.j2"):
        assert f"(url={HOSTILE})" in renderer.render_text(template, context)
    symptom = copy.deepcopy(SYMPTOM_FULL)
    symptom["symptom"].update(summary=HOSTILE, labels={"unit": HOSTILE})
    for template in SYMPTOM_TEMPLATES:
        text = renderer.render_text(template, symptom)
        assert f": {HOSTILE}\n" in text or f"Recovered: {HOSTILE}\n" in text
        assert f"unit = {HOSTILE}" in text


# --- overrides and the sandbox -------------------------------------------------------------


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text, encoding="utf-8")


def test_override_directory_wins_and_the_rest_falls_back(tmp_path: Path) -> None:
    write(tmp_path, "helpdesk_opened.subject.j2", "New: {{ service }}")
    renderer = Renderer(str(tmp_path))
    subject, text, _ = renderer.render_message("helpdesk_opened", FULL)
    assert subject == "New: intranet"
    assert "helpdesk_opened" not in text and text  # the package's own text template


def test_override_can_replace_a_shared_part(tmp_path: Path) -> None:
    write(tmp_path, "_footer.txt.j2", "-- the ops team {{ marker }}")
    body = Renderer(str(tmp_path)).render_text("ticket_body.txt.j2", FULL)
    assert body.endswith("-- the ops team [forewarn:1a2b3c4d5e6f7a8b]")


def test_subject_is_one_stripped_line_whatever_the_template(tmp_path: Path) -> None:
    write(tmp_path, "custom.subject.j2", "\n  Line one\n\n  line   two  \n")
    write(tmp_path, "custom.txt.j2", "text")
    subject, text, html = Renderer(str(tmp_path)).render_message("custom", FULL)
    assert (subject, text, html) == ("Line one line two", "text", None)  # HTML is optional


def test_override_html_is_autoescaped_too(tmp_path: Path) -> None:
    write(tmp_path, "custom.subject.j2", "s")
    write(tmp_path, "custom.txt.j2", "{{ service }}")
    write(tmp_path, "custom.html.j2", "<p>{{ service }}</p>")
    _, text, html = Renderer(str(tmp_path)).render_message("custom", dict(FULL, service=HOSTILE))
    assert text == HOSTILE
    assert html == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"


def test_sandbox_hides_python_internals(tmp_path: Path) -> None:
    write(tmp_path, "ticket_body.txt.j2", "[{{ ''.__class__ }}][{{ alert.__class__.__mro__ }}]")
    assert Renderer(str(tmp_path)).render_text("ticket_body.txt.j2", FULL) == "[][]"


def test_sandbox_blocks_reaching_for_subclasses(tmp_path: Path) -> None:
    write(tmp_path, "ticket_body.txt.j2", "{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(RenderError, match="SecurityError"):
        Renderer(str(tmp_path)).render_text("ticket_body.txt.j2", FULL)


def test_sandbox_keeps_the_context_read_only(tmp_path: Path) -> None:
    write(tmp_path, "ticket_body.txt.j2", "{{ alert.labels.clear() }}")
    context = copy.deepcopy(FULL)
    with pytest.raises(RenderError, match="unsafe"):
        Renderer(str(tmp_path)).render_text("ticket_body.txt.j2", context)
    assert context["alert"]["labels"] == {"url": "http://intranet/"}


def test_missing_or_broken_templates_are_render_errors(tmp_path: Path) -> None:
    write(tmp_path, "broken.txt.j2", "{% if %}")
    renderer = Renderer(str(tmp_path))
    with pytest.raises(RenderError, match=r"nope\.txt\.j2"):
        renderer.render_text("nope.txt.j2", FULL)
    with pytest.raises(RenderError, match=r"broken\.txt\.j2"):
        renderer.render_text("broken.txt.j2", FULL)
    with pytest.raises(RenderError):
        renderer.render_message("nope", FULL)


# --- filters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, "0 s"), (45, "45 s"), (59.6, "1 min"), (190, "3 min 10 s"), (3600, "1 h"),
     (3605, "1 h"), (7500, "2 h 5 min"), (93600, "1 d 2 h"), (172800 + 59, "2 d"),
     (-5, "0 s"), (None, ""), (float("nan"), "")],
)
def test_duration(seconds: float | None, expected: str) -> None:
    assert format_duration(seconds) == expected


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(OPENED, "2025-11-22 08:26 UTC"), (0, "1970-01-01 00:00 UTC"), (None, "")],
)
def test_datetime(epoch: float | None, expected: str) -> None:
    assert format_datetime(epoch) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0, "0"), (93.456, "93.46"), (97.3, "97.3"), (1e12, "1000000000000"), (-2.5, "-2.5"),
     (None, ""), (float("inf"), "inf")],
)
def test_number(value: float | None, expected: str) -> None:
    assert format_number(value) == expected
