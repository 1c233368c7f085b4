"""The sidebar and the breadcrumbs, from one definition: each item's URL name, the paths that
belong to it and the role it needs.

A context processor (``navigation``) gives every page ``nav``: the sections a member may see,
the current item (highlighted on its sub-pages too: a voice's page highlights Voices) and the
breadcrumbs "Section › Page"; a page showing one object adds its name with
``{% block crumb %}…{% endblock %}`` (``docs/conventions.md``). A new page is one new ``Item``
here; an item whose URL name does not resolve yet is left out.
"""

from dataclasses import dataclass, field

from django.urls import NoReverseMatch, reverse

from apps.workspaces.models import ROLE_RANK, Role


@dataclass(frozen=True)
class Item:
    label: str
    url_name: str
    # Paths below the item's own URL that belong to it too (its URL always does).
    prefixes: tuple[str, ...] = ()
    role: str = Role.VIEWER  # the weakest role that sees the item
    exact: bool = False  # only its own URL (Home)


@dataclass(frozen=True)
class Section:
    heading: str  # "" for the items above the sections (Home, Jobs)
    items: tuple[Item, ...]


SECTIONS: tuple[Section, ...] = (
    Section(
        "",
        (
            Item("Home", "workspaces:home", exact=True),
            Item("Jobs", "jobs:list"),
        ),
    ),
    Section(
        "Create",
        (
            Item("Speech", "speech:page"),
            Item("Projects", "projects:list"),
            Item(
                "Voice design",
                "voices:designs",
                ("/voices/design/", "/voices/designs/", "/voices/votes/"),
            ),
            Item("Transcripts", "transcripts:list"),
            Item("Agents", "agents:list"),
        ),
    ),
    Section(
        "Library",
        (
            Item("Voices", "voices:library"),
            Item("History", "history:list"),
            Item("Pronunciation", "projects:dictionaries"),
            Item("Consent register", "voices:consents", role=Role.MANAGER),
        ),
    ),
    Section(
        "Team",
        (
            Item("Members", "workspaces:members", ("/invitations/",)),
            Item("API keys", "gateway:keys", role=Role.MEMBER),
            Item("Audit log", "workspaces:audit", role=Role.MANAGER),
            Item("Approvals", "projects:approvals", role=Role.MANAGER),
        ),
    ),
    Section(
        "Billing",
        (
            Item("My usage", "billing:usage"),
            Item("Spend", "billing:spend"),
            Item("Spend review", "billing:review_index", role=Role.MANAGER),
            Item("Reconciliation", "billing:reconcile", role=Role.MANAGER),
            Item("Budgets", "billing:budgets"),
            Item("Plan", "billing:plan", role=Role.MANAGER),
            Item("Rate card", "billing:rates"),
        ),
    ),
    Section(
        "Settings",
        (
            Item("Settings", "workspaces:settings", role=Role.OWNER),
            Item("Engine", "workspaces:engine", role=Role.OWNER),
        ),
    ),
)


@dataclass
class Link:
    label: str
    url: str
    item: Item
    current: bool = False


@dataclass
class NavSection:
    heading: str
    links: list[Link] = field(default_factory=list)


@dataclass
class Crumb:
    label: str
    url: str = ""  # empty: the page itself, not a link


@dataclass
class Nav:
    sections: list[NavSection]
    current: Link | None
    crumbs: list[Crumb]


def _url(name: str) -> str:
    try:
        return reverse(name)
    except NoReverseMatch:
        return ""  # a page not built yet


def _owns(link: Link, path: str) -> int:
    """How closely ``link`` owns ``path``: the length of its longest matching path (0: no)."""
    if link.item.exact:
        return len(link.url) if path == link.url else 0
    return max(
        (len(p) for p in (link.url, *link.item.prefixes) if path.startswith(p)),
        default=0,
    )


def nav_for(path: str, role: str | None) -> Nav:
    """The sidebar a member of ``role`` sees at ``path`` (no role: no sections)."""
    sections: list[NavSection] = []
    if role is not None:
        rank = ROLE_RANK[Role(role)]
        for section in SECTIONS:
            links = [
                Link(item.label, url, item)
                for item in section.items
                if rank >= ROLE_RANK[Role(item.role)] and (url := _url(item.url_name))
            ]
            if links:
                sections.append(NavSection(section.heading, links))
    best, best_len, best_section = None, 0, None
    for nav_section in sections:
        for link in nav_section.links:
            length = _owns(link, path)
            if length > best_len:
                best, best_len, best_section = link, length, nav_section
    crumbs: list[Crumb] = []
    if best is not None:
        best.current = True
        heading, first = best_section.heading, best_section.links[0].url
        if heading and heading != best.label:
            crumbs.append(Crumb(heading, "" if path == first else first))
        crumbs.append(Crumb(best.label, "" if path == best.url else best.url))
    return Nav(sections=sections, current=best, crumbs=crumbs)


def navigation(request):
    """Context processor: ``nav`` for signed-in members of a workspace."""
    membership = getattr(request, "membership", None)
    if membership is None:
        return {}
    return {"nav": nav_for(request.path, membership.role)}
