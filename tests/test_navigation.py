"""The sidebar and breadcrumbs (studio_site.navigation): grouped sections, role rules, the
current section on sub-pages, breadcrumbs that link."""

import re

import pytest
from django.urls import reverse

from apps.voices.models import LibraryVoice
from apps.workspaces.models import Role
from studio_site import navigation
from studio_site.navigation import Item, Section, nav_for


def sidebar(response) -> str:
    html = response.content.decode()
    return html.split('id="sidebar"', 1)[1].split("</aside>", 1)[0]


def headings(html: str) -> list[str]:
    return re.findall(r'<h2 class="nav-heading"[^>]*>([^<]+)</h2>', html)


def links(html: str) -> list[str]:
    return re.findall(r'<li><a href="[^"]*"[^>]*>([^<]+)</a></li>', html)


def current(html: str) -> list[str]:
    return re.findall(r'<a href="([^"]*)" class="is-current" aria-current="[a-z]+">', html)


def crumbs(response) -> str:
    html = response.content.decode()
    return html.split('<nav class="breadcrumbs"', 1)[1].split("</nav>", 1)[0]


def test_the_owner_sees_every_item_grouped_in_sections(client_as, owner, workspace):
    html = sidebar(client_as(owner).get("/"))
    assert headings(html) == ["Create", "Library", "Team", "Billing", "Settings"]
    names = links(html)
    for name in ("Home", "Jobs", "Voice design", "Transcripts", "Voices", "History",
                 "Consent register", "Members", "API keys", "Audit log", "My usage",
                 "Budgets", "Plan", "Rate card", "Settings", "Engine"):  # fmt: skip
        assert name in names, name
    # Each item in its section, in order.
    assert html.index(">Create<") < html.index(">Transcripts<") < html.index(">Library<")
    assert html.index(">Library<") < html.index(">History<") < html.index(">Team<")
    assert html.index(">Team<") < html.index(">Audit log<") < html.index(">Billing<")


@pytest.mark.parametrize(
    "role, hidden, shown",
    [
        ("viewer", {"API keys", "Consent register", "Audit log", "Plan", "Settings", "Engine"},
         {"Voices", "History", "Members", "My usage", "Budgets", "Rate card", "Transcripts"}),
        ("member", {"Consent register", "Audit log", "Plan", "Settings", "Engine"},
         {"API keys", "Voices"}),
        ("manager", {"Settings", "Engine"}, {"Consent register", "Audit log", "Plan", "API keys"}),
    ],
)  # fmt: skip
def test_each_role_sees_the_items_it_may_open(client_as, request, role, hidden, shown):
    html = sidebar(client_as(request.getfixturevalue(role)).get("/"))
    names = set(links(html))
    assert not (hidden & names)
    assert shown <= names
    if role != "owner":  # a section with no item for the role is not shown at all
        assert "Settings" not in headings(html)


def test_a_voice_page_highlights_voices_and_its_crumbs_link_back(client_as, member, workspace):
    voice = LibraryVoice.objects.create(
        workspace=workspace, engine="local", voice_id="v-ada", name="Ada"
    )
    response = client_as(member).get(reverse("voices:detail", args=[voice.pk]))
    assert response.status_code == 200
    assert current(sidebar(response)) == [reverse("voices:library")]
    trail = crumbs(response)
    assert f'<a href="{reverse("history:list")}">Library</a>' not in trail  # Voices is first
    assert f'<a href="{reverse("voices:library")}">Library</a>' in trail
    assert f'<a href="{reverse("voices:library")}">Voices</a>' in trail


def test_the_page_itself_is_the_last_crumb_and_not_a_link(client_as, member):
    response = client_as(member).get(reverse("transcripts:list"))
    trail = crumbs(response)
    assert '<span aria-current="page">Transcripts</span>' in trail
    assert 'href="/transcripts/">Transcripts' not in trail
    assert "Create" in trail
    assert current(sidebar(response)) == [reverse("transcripts:list")]
    assert 'aria-current="page">Transcripts</a>' in sidebar(response)


def test_sub_pages_highlight_their_section(client_as, owner, workspace):
    client = client_as(owner)
    for path, expected in [
        (reverse("transcripts:new"), "transcripts:list"),
        (reverse("voices:design_new"), "voices:designs"),
        (reverse("voices:consents"), "voices:consents"),
        (reverse("workspaces:engine"), "workspaces:engine"),
        (reverse("workspaces:settings"), "workspaces:settings"),
        (reverse("billing:budgets"), "billing:budgets"),
    ]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert current(sidebar(response)) == [reverse(expected)], path
        assert 'aria-current="location"' in sidebar(response) or path == reverse(expected)


def test_the_longest_path_wins_and_home_is_only_home():
    nav = nav_for("/voices/designs/3/", Role.OWNER)
    assert nav.current.label == "Voice design"
    assert [c.label for c in nav.crumbs] == ["Create", "Voice design"]
    assert nav.crumbs[-1].url == reverse("voices:designs")
    assert nav_for("/voices/12/", Role.OWNER).current.label == "Voices"
    assert nav_for("/", Role.OWNER).current.label == "Home"
    assert nav_for("/", Role.OWNER).crumbs[-1].url == ""
    assert nav_for("/billing/notifications/", Role.OWNER).current is None
    assert nav_for("/settings/engine/", Role.OWNER).current.label == "Engine"
    assert nav_for("/settings/", Role.OWNER).crumbs[0].label == "Settings"
    assert len(nav_for("/settings/", Role.OWNER).crumbs) == 1  # not "Settings › Settings"


def test_an_item_whose_page_does_not_exist_yet_is_left_out(monkeypatch):
    monkeypatch.setattr(
        navigation,
        "SECTIONS",
        (Section("Create", (Item("Nowhere", "nowhere:page"), Item("Jobs", "jobs:list"))),),
    )
    nav = nav_for("/jobs/", Role.OWNER)
    assert [link.label for s in nav.sections for link in s.links] == ["Jobs"]


def test_no_sidebar_sections_without_a_workspace(client):
    assert nav_for("/", None).sections == []
    response = client.get(reverse("login"))
    assert 'class="nav-sections"' not in response.content.decode()


def test_a_page_adds_its_object_through_the_crumb_block(rf, member, workspace):
    from django.template import engines

    request = rf.get("/transcripts/5/")
    request.user = member
    request.membership = member.memberships.get(workspace=workspace)
    request.workspace = workspace
    template = engines["django"].from_string(
        '{% extends "base.html" %}{% block crumb %}Budget call{% endblock %}'
    )
    html = template.render({}, request)
    trail = html.split('<nav class="breadcrumbs"', 1)[1].split("</nav>", 1)[0]
    assert '<a href="/transcripts/">Transcripts</a>' in trail
    assert '<li class="crumb-object">Budget call</li>' in trail
