"""The voice library: filters and sorts return exactly the right voices, in a fixed number of
queries; sync from the engine (withdrawn voices kept and flagged); favourites; who may do what.
"""

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.generation.engine import engine_for
from apps.jobs.models import Job, JobStatus
from apps.jobs.services import job_start
from apps.voices import services
from apps.voices.models import (
    Approval,
    Collection,
    Favourite,
    LibraryFacets,
    LibraryVoice,
    Tag,
)
from apps.voices.services import LibraryFilters, library_page, library_sync
from tests.conftest import HTMX


def make_voice(workspace, voice_id, name, **fields):
    return LibraryVoice.objects.create(workspace=workspace, engine=fields.pop("engine", "local"),
                                       voice_id=voice_id, name=name, **fields)  # fmt: skip


@pytest.fixture
def shelf(workspace, member, outsider):
    """Six voices of ``workspace`` (one withdrawn), tags, a collection, and a foreign voice."""
    now = timezone.now()
    v = {
        "ada": make_voice(workspace, "v-ada", "Ada", gender="female", accent="british",
                          category="premade", use_count=5, description="Warm narrator"),
        "bob": make_voice(workspace, "v-bob", "Bob", gender="male", accent="american",
                          category="generated", source="designed", use_count=9,
                          approval=Approval.APPROVED),
        "cy": make_voice(workspace, "v-cy", "Cy", gender="male", accent="British",
                         category="cloned", source="cloned", last_used_at=now),
        "dee": make_voice(workspace, "v-dee", "Dee", gender="female", accent="irish",
                          engine="elevenlabs", approval=Approval.PROPOSED,
                          last_used_at=now - timedelta(days=1)),
        "eve": make_voice(workspace, "v-eve", "Eve Émilie ✨", language="fr", use_count=1),
        "gone": make_voice(workspace, "v-gone", "Gone", gender="female", withdrawn_at=now),
    }  # fmt: skip
    for i, key in enumerate(["ada", "bob", "cy", "dee", "eve", "gone"]):  # creation order
        LibraryVoice.objects.filter(pk=v[key].pk).update(created_at=now - timedelta(hours=10 - i))
    narr = Tag.objects.create(workspace=workspace, name="narration")
    v["ada"].tags.add(narr)
    v["cy"].tags.add(narr)
    books = Collection.objects.create(workspace=workspace, name="Audiobook narrators")
    books.voices.add(v["ada"], v["eve"])
    Favourite.objects.create(user=member, voice=v["bob"])
    foreign_ws = outsider.memberships.first().workspace
    v["foreign"] = make_voice(foreign_ws, "v-far", "Ada Abroad", gender="female")
    v["narr"], v["books"] = narr, books
    return v


def names(workspace, user, **filters):
    found = services.library_voices(
        workspace=workspace, user=user, filters=LibraryFilters(**filters)
    )
    return [voice.name for voice in found]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["Ada", "Bob", "Cy", "Dee", "Eve Émilie ✨"]),
        ({"withdrawn": True}, ["Ada", "Bob", "Cy", "Dee", "Eve Émilie ✨", "Gone"]),
        ({"q": "ada"}, ["Ada"]),
        ({"q": "narrator"}, ["Ada"]),  # the description
        ({"q": "v-cy"}, ["Cy"]),  # the exact voice id
        ({"q": "Émilie ✨"}, ["Eve Émilie ✨"]),
        ({"q": "nobody"}, []),
        ({"gender": "female"}, ["Ada", "Dee"]),
        ({"gender": "FEMALE", "withdrawn": True}, ["Ada", "Dee", "Gone"]),
        ({"accent": "british"}, ["Ada", "Cy"]),  # case-insensitive
        ({"gender": "male", "accent": "british"}, ["Cy"]),
        ({"language": "fr"}, ["Eve Émilie ✨"]),
        ({"category": "cloned"}, ["Cy"]),
        ({"engine": "elevenlabs"}, ["Dee"]),
        ({"approval": "approved"}, ["Bob"]),
        ({"approval": "proposed"}, ["Dee"]),
        ({"sort": "newest"}, ["Eve Émilie ✨", "Dee", "Cy", "Bob", "Ada"]),
        ({"sort": "most_used"}, ["Bob", "Ada", "Eve Émilie ✨", "Cy", "Dee"]),
        ({"sort": "recent"}, ["Cy", "Dee", "Ada", "Bob", "Eve Émilie ✨"]),
    ],
)
def test_filters_and_sorts_return_exactly_the_right_voices(
    shelf, workspace, member, filters, expected
):
    assert names(workspace, member, **filters) == expected


def test_tag_collection_and_favourite_filters(shelf, workspace, member, owner):
    assert names(workspace, member, tag=shelf["narr"].pk) == ["Ada", "Cy"]
    assert names(workspace, member, collection=shelf["books"].pk) == ["Ada", "Eve Émilie ✨"]
    assert names(workspace, member, favourites=True) == ["Bob"]
    assert names(workspace, owner, favourites=True) == []  # favourites are per member
    assert names(workspace, member, tag=shelf["narr"].pk, gender="male") == ["Cy"]


def test_filters_read_from_a_query_ignore_what_they_cannot_use():
    f = LibraryFilters.from_query(
        {"q": "  x  ", "tag": "abc", "collection": "-1", "sort": "drop table", "approval": "??",
         "favourites": "1", "gender": "female"}
    )  # fmt: skip
    assert (f.q, f.tag, f.collection, f.sort, f.approval, f.favourites, f.gender) == (
        "x", None, None, "name", "", True, "female",
    )  # fmt: skip
    assert f.as_query() == {"q": "x", "favourites": "1", "gender": "female"}


def test_the_page_costs_the_same_queries_whatever_the_filters(shelf, workspace, member):
    services.library_facets(workspace)  # (built once; then read as one row)
    counts = set()
    for filters in (
        LibraryFilters(),
        LibraryFilters(q="a", gender="female", sort="recent"),
        LibraryFilters(tag=shelf["narr"].pk, collection=shelf["books"].pk, favourites=True),
        LibraryFilters(approval="approved", sort="most_used", withdrawn=True),
    ):
        with CaptureQueriesContext(connection) as queries:
            library_page(workspace=workspace, user=member, filters=filters, page_number=1)
        counts.add(len(queries))
    assert max(counts) == 6  # (a page with no voice skips its prefetch)


def test_stored_facets_are_dropped_by_a_change_and_rebuilt(shelf, workspace, member):
    assert "spanish" not in services.library_facets(workspace)["accent"]
    assert LibraryFacets.objects.filter(workspace=workspace).exists()
    services.voice_propose(voice=shelf["ada"], actor=member)  # saves no facet field
    assert LibraryFacets.objects.filter(workspace=workspace).exists()
    make_voice(workspace, "v-new", "Nuevo", accent="spanish")
    assert not LibraryFacets.objects.filter(workspace=workspace).exists()
    assert "spanish" in services.library_facets(workspace)["accent"]


def test_the_facets_offer_the_workspace_s_own_label_values(shelf, workspace, member):
    found = library_page(workspace=workspace, user=member, filters=LibraryFilters(), page_number=1)
    assert found.facets["gender"] == ["female", "male"]
    assert found.facets["accent"] == ["american", "British", "irish"]  # one British
    assert found.engines == ["elevenlabs", "local"]
    assert [t.name for t in found.tags] == ["narration"]


# --- The page -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "manager", "member", "viewer"])
def test_everyone_in_the_workspace_sees_the_library(shelf, client_as, request, role):
    user = request.getfixturevalue(role)
    response = client_as(user).get(reverse("voices:library"), {"gender": "female"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "Ada" in body and "Dee" in body and "Bob" not in body
    assert "Ada Abroad" not in body  # another workspace's voice
    assert 'value="female" selected' in body  # the filter is kept in the form


def test_an_outsider_sees_only_their_own_library(shelf, client_as, outsider):
    body = client_as(outsider).get(reverse("voices:library")).content.decode()
    assert "Ada Abroad" in body and "Warm narrator" not in body


def test_htmx_gets_only_the_results_and_an_empty_state_when_nothing_matches(
    shelf, client_as, member
):
    response = client_as(member, **HTMX).get(reverse("voices:library"), {"q": "zzz"})
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert 'id="voice-results"' in body and "No voice matches these filters" in body
    assert response["HX-Push-Url"] == "/voices/?q=zzz"  # only the filters in force


def test_htmx_pushes_a_clean_address_with_the_page(shelf, client_as, member):
    query = {"q": "", "gender": "female", "accent": "", "sort": "name", "page": "1"}
    response = client_as(member, **HTMX).get(reverse("voices:library"), query)
    assert response["HX-Push-Url"] == "/voices/?gender=female&page=1"
    response = client_as(member, **HTMX).get(reverse("voices:library"), {"sort": "name"})
    assert response["HX-Push-Url"] == "/voices/"


def test_an_empty_library_says_how_to_fill_it(workspace, client_as, owner, member):
    assert "Sync it from the engine" in client_as(owner).get(reverse("voices:library")).text
    assert "A manager can sync it" in client_as(member).get(reverse("voices:library")).text


def test_paging_keeps_the_filters(workspace, client_as, member):
    for i in range(services.PAGE_SIZE + 3):
        make_voice(workspace, f"v-{i:03}", f"Voice {i:03}", gender="male")
    response = client_as(member).get(reverse("voices:library"), {"gender": "male", "page": "2"})
    body = response.content.decode()
    assert "Voice 026" in body and "Voice 000" not in body
    assert "gender=male&amp;page=1" in body
    # A page number that is not one gives the first page, not an error.
    assert client_as(member).get(reverse("voices:library"), {"page": "x"}).status_code == 200


def test_a_member_stars_and_unstars_a_voice(shelf, client_as, member):
    url = reverse("voices:favourite", args=[shelf["ada"].pk])
    response = client_as(member, **HTMX).post(url)
    assert response.status_code == 200 and 'aria-pressed="true"' in response.text
    assert Favourite.objects.filter(user=member, voice=shelf["ada"]).exists()
    response = client_as(member).post(url, {"next": "gender=female"})
    assert response.status_code == 303 and response["Location"].endswith("?gender=female")
    assert not Favourite.objects.filter(user=member, voice=shelf["ada"]).exists()


def test_a_viewer_cannot_star_and_an_outsider_gets_404(shelf, client_as, viewer, outsider):
    url = reverse("voices:favourite", args=[shelf["ada"].pk])
    assert client_as(viewer).post(url).status_code == 403
    assert client_as(outsider).post(url).status_code == 404
    assert not Favourite.objects.filter(voice=shelf["ada"]).exists()


@pytest.mark.parametrize(("role", "status"), [("owner", 303), ("manager", 303),
                                              ("member", 403), ("viewer", 403)])  # fmt: skip
def test_only_managers_and_owners_start_a_sync(workspace, client_as, request, role, status):
    user = request.getfixturevalue(role)
    response = client_as(user).post(reverse("voices:sync"))
    assert response.status_code == status
    jobs = Job.objects.filter(workspace=workspace, kind="voices_sync")
    assert jobs.count() == (1 if status == 303 else 0)
    if status == 303:
        assert response["Location"] == reverse("jobs:detail", args=[jobs.get().pk])


def test_get_is_not_a_sync(workspace, client_as, owner):
    assert client_as(owner).get(reverse("voices:sync")).status_code == 405


# --- Sync from the engine -----------------------------------------------------------------


def test_sync_lists_the_engine_s_voices_and_keeps_the_team_s_curation(workspace, owner):
    engine = engine_for(workspace)
    listed = services.engine_voices(engine)
    assert listed, "the local engine lists voices"
    first = library_sync(workspace=workspace)
    assert first.added == len(listed) and first.updated == 0 and first.withdrawn == []
    voice = LibraryVoice.objects.get(workspace=workspace, voice_id=listed[0].voice_id)
    assert voice.name == listed[0].name and voice.engine == "local"
    assert voice.gender == (listed[0].labels or {}).get("gender", "")
    tag = services.tag_add(voice=voice, name="  house   style ")
    LibraryVoice.objects.filter(pk=voice.pk).update(approval=Approval.APPROVED, name="Renamed")
    again = library_sync(workspace=workspace)
    assert (again.added, again.updated) == (0, len(listed))
    voice.refresh_from_db()
    assert voice.name == listed[0].name  # the engine's name wins
    assert voice.approval == Approval.APPROVED and list(voice.tags.all()) == [tag]
    assert tag.name == "house style"


def test_a_voice_gone_upstream_is_flagged_withdrawn_never_deleted_and_comes_back(workspace, owner):
    library_sync(workspace=workspace)
    ghost = make_voice(workspace, "v-ghost", "Ghost")  # a voice the engine no longer lists
    result = library_sync(workspace=workspace)
    ghost.refresh_from_db()
    assert result.withdrawn == ["Ghost"] and ghost.withdrawn_at is not None
    assert library_sync(workspace=workspace).withdrawn == []  # flagged once, still kept
    assert LibraryVoice.objects.filter(pk=ghost.pk).exists()
    # The engine lists it again (here: the ghost takes a listed voice's id).
    listed_id = engine_voices_first(workspace)
    LibraryVoice.objects.filter(workspace=workspace, voice_id=listed_id).delete()
    LibraryVoice.objects.filter(pk=ghost.pk).update(voice_id=listed_id)
    back = library_sync(workspace=workspace)
    ghost.refresh_from_db()
    assert back.returned == 1 and ghost.withdrawn_at is None


def engine_voices_first(workspace) -> str:
    return services.engine_voices(engine_for(workspace))[0].voice_id


def test_a_sync_runs_as_a_job_on_a_real_worker(celery_worker, workspace, owner):
    # The workspace's set-up (committed here) already filled the library.
    assert LibraryVoice.objects.filter(workspace=workspace).count() > 0
    LibraryVoice.objects.filter(workspace=workspace).delete()
    job = job_start(workspace=workspace, kind="voices_sync", created_by=owner)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            break
        time.sleep(0.2)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.progress == 100 and job.result["added"] > 0
    assert LibraryVoice.objects.filter(workspace=workspace).count() == job.result["added"]
