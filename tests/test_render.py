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
    "notice": {"eta": OPENED + 3600, "next_update_at": OPENED + 1800,
               "workaround": "Use the mirror at https://mirror.example.com."},
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

TEXT_TEMPLATES = [
    "ticket_subject.txt.j2", "ticket_body.txt.j2", "ticket_update.txt.j2",
    "ticket_resolved.txt.j2", "ticket_reopened.txt.j2",
]
HELPDESK_MESSAGES = [
    "helpdesk_opened", "helpdesk_reopened", "helpdesk_updated", "helpdesk_resolved",
]
USER_MESSAGES = ["user_outage", "user_resolved"]
CONTEXTS = {"full": FULL, "minimal": MINIMAL}


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
    expected = "web01" if context is FULL else "db01"
    if template != "ticket_subject.txt.j2":
        expected = "[forewarn:1a2b3c4d5e6f7a8b]" if context is FULL else "[forewarn:ffee]"
    assert expected in text
    no_leftovers(text)


@pytest.mark.parametrize("context_name", CONTEXTS)
@pytest.mark.parametrize("name", HELPDESK_MESSAGES + USER_MESSAGES)
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


# --- user notices ----------------------------------------------------------------------------


@pytest.mark.parametrize("context_name", CONTEXTS)
@pytest.mark.parametrize("name", USER_MESSAGES)
def test_user_notices_carry_no_technical_detail(
    renderer: Renderer, name: str, context_name: str
) -> None:
    context = CONTEXTS[context_name]
    rendered = " ".join(part or "" for part in renderer.render_message(name, context))
    alert = FULL["alert"]
    technical = [alert["rule"], alert["metric"], alert["error"], alert["condition"], "value ==",
                 FULL["host"], MINIMAL["host"], MINIMAL["alert"]["rule"], "http://intranet/",
                 "forewarn:", "java", "critical", "severity"]
    for word in technical:
        assert word not in rendered, word


def test_outage_notice_says_what_users_need(renderer: Renderer) -> None:
    subject, text, _ = renderer.render_message("user_outage", FULL)
    assert subject == "Problem with intranet again: we are working on it"
    assert text.startswith("Hello,")
    for expected in ("intranet", "ticket #12", "helpdesk@example.com",
                     "fixed by 2025-11-22 09:26 UTC", "update by 2025-11-22 08:56 UTC",
                     "mirror.example.com", "come back"):
        assert expected in text, expected


def test_outage_notice_admits_when_nobody_knows_yet(renderer: Renderer) -> None:
    _, text, html = renderer.render_message("user_outage", MINIMAL)
    assert "We don't know yet how long it will take" in text
    assert "we will send you an update" in text.lower()
    assert "some of our services" in text
    assert html is not None and "We don't know yet how long it will take" in html


def test_resolved_notice_thanks_and_says_how_long(renderer: Renderer) -> None:
    subject, text, _ = renderer.render_message("user_resolved", FULL)
    assert subject == "Fixed: intranet is working normally again"
    assert "lasted 3 min 10 s" in text
    assert "Thank you for your patience." in text


# --- escaping ----------------------------------------------------------------------------


def test_html_escapes_a_hostile_label_and_text_keeps_it(renderer: Renderer) -> None:
    context = with_label(FULL, url=HOSTILE)
    _, text, html = renderer.render_message("helpdesk_opened", context)
    assert html is not None
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert f"url = {HOSTILE}" in text
    assert f"url = {HOSTILE}" in renderer.render_text("ticket_body.txt.j2", context)


def test_html_escapes_a_hostile_service_name_in_user_notices(renderer: Renderer) -> None:
    context = dict(MINIMAL, service=HOSTILE)
    _, text, html = renderer.render_message("user_outage", context)
    assert html is not None and HOSTILE not in html and "&lt;script&gt;" in html
    assert HOSTILE in text


# --- overrides and the sandbox -------------------------------------------------------------


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text, encoding="utf-8")


def test_override_directory_wins_and_the_rest_falls_back(tmp_path: Path) -> None:
    write(tmp_path, "user_outage.subject.j2", "Heads up: {{ service }}")
    renderer = Renderer(str(tmp_path))
    subject, text, _ = renderer.render_message("user_outage", FULL)
    assert subject == "Heads up: intranet"
    assert text.startswith("Hello,")  # the package's template


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
