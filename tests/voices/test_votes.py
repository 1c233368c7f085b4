"""Blind votes on a design's previews: each voter hears a shuffled order, nothing in the page
names a preview while the vote is open, results by preview once it closes."""

import re

import pytest
from django.urls import reverse

from apps.history.models import Generation
from apps.voices import services_design
from apps.voices.models import DesignBallot, DesignVote
from apps.workspaces.models import Membership, Role, User
from apps.workspaces.services import ActionRefused
from tests.voices.test_design import recipe


def cast(client, vote, option):
    return client.post(reverse("voices:vote_cast", args=[vote.pk]), {"option": option})


def close(client, vote):
    return client.post(reverse("voices:vote_close", args=[vote.pk]))


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def design(workspace, member):
    return services_design.design_generate(workspace=workspace, user=member, recipe=recipe())


@pytest.fixture
def vote(design, member):
    return services_design.vote_open(design=design, user=member, question="Which one for the ad?")


@pytest.fixture
def voters(workspace):
    people = []
    for index in range(12):
        user = User.objects.create_user(email=f"voter{index}@example.com", password="x" * 12)
        Membership.objects.create(workspace=workspace, user=user, role=Role.MEMBER)
        people.append(user)
    return people


def test_each_voter_hears_a_shuffled_order_that_stays_the_same_for_them(vote, voters):
    orders = [tuple(services_design.vote_order(vote, user)) for user in voters]
    assert all(sorted(order) == [0, 1, 2] for order in orders)
    assert len(set(orders)) > 1  # shuffled per voter (12 voters, 6 possible orders)
    assert orders == [tuple(services_design.vote_order(vote, user)) for user in voters]


def test_the_open_vote_page_names_no_preview(client_as, vote, design, member, voters):
    secrets_of_design = [
        *(p["generated_voice_id"] for p in design.previews),
        *(p["history_item_id"] for p in design.previews),
        *(p["sha256"] for p in design.previews),
        vote.secret,
    ]
    clip_ids = list(
        Generation.objects.filter(
            history_item_id__in=[p["history_item_id"] for p in design.previews]
        ).values_list("pk", flat=True)
    )
    for user in [member, *voters[:3]]:
        page = client_as(user).get(reverse("voices:vote", args=[vote.pk])).text
        assert "Option 1" in page and "Option 3" in page
        for secret in secrets_of_design:
            assert secret not in page
        assert not re.search(r"Preview [ABC]\b", page)
        for pk in clip_ids:
            assert reverse("history:audio", args=[pk]) not in page
        assert reverse("voices:design", args=[design.pk]) not in page


def test_each_option_plays_the_preview_behind_it_for_that_voter(client_as, vote, design, voters):
    audio = {
        index: Generation.objects.get(history_item_id=p["history_item_id"]).file.read()
        for index, p in enumerate(design.previews)
    }
    for user in voters[:4]:
        order = services_design.vote_order(vote, user)
        client = client_as(user)
        for option in (1, 2, 3):
            response = client.get(reverse("voices:vote_listen", args=[vote.pk, option]))
            assert response.status_code == 200
            assert b"".join(response.streaming_content) == audio[order[option - 1]]
            assert "no-store" in response["Cache-Control"]
        assert client.get(reverse("voices:vote_listen", args=[vote.pk, 4])).status_code == 404


def test_votes_count_the_preview_behind_each_voter_s_option_and_results_wait_for_closing(
    client_as, vote, member, manager, voters
):
    picks = {}
    for user in voters[:6]:
        order = services_design.vote_order(vote, user)
        option = order.index(2) + 1  # everyone finds preview C, wherever it is for them
        response = client_as(user).post(
            reverse("voices:vote_cast", args=[vote.pk]), {"option": option}
        )
        assert response.status_code == 303
        picks[user.pk] = 2
    first = voters[6]
    order = services_design.vote_order(vote, first)
    client_as(first).post(
        reverse("voices:vote_cast", args=[vote.pk]), {"option": order.index(0) + 1}
    )
    # Changing one's mind replaces the ballot.
    client_as(first).post(
        reverse("voices:vote_cast", args=[vote.pk]), {"option": order.index(1) + 1}
    )
    assert DesignBallot.objects.get(voter=first).preview == 1
    assert DesignBallot.objects.count() == 7
    with pytest.raises(ActionRefused, match="when the vote closes"):
        services_design.vote_results(vote)
    page = client_as(member).get(reverse("voices:vote", args=[vote.pk])).text
    assert "Results" not in page and "7 votes so far" in page
    # A member who did not open it cannot close it; the opener can.
    assert close(client_as(voters[0]), vote).status_code == 403
    assert close(client_as(member), vote).status_code == 303
    vote.refresh_from_db()
    results = {r.letter: (r.votes, r.winner) for r in services_design.vote_results(vote)}
    assert results == {"A": (0, False), "B": (1, False), "C": (6, True)}
    page = client_as(voters[0]).get(reverse("voices:vote", args=[vote.pk])).text
    assert "Results" in page and "most votes" in page and "You voted for C" in page
    assert "Preview A" in page  # the names are shown once closed
    late = cast(client_as(voters[7]), vote, 1)
    assert late.status_code == 400 and "closed" in late.text
    again = close(client_as(manager), vote)
    assert again.status_code == 400 and "already closed" in again.text


@pytest.mark.parametrize("option", ["0", "4", "", "x", "-1"])
def test_a_bad_option_is_a_400(client_as, vote, member, option):
    response = client_as(member).post(
        reverse("voices:vote_cast", args=[vote.pk]), {"option": option}
    )
    assert response.status_code == 400 and "Pick one of the options" in response.text
    assert not DesignBallot.objects.exists()


def test_a_manager_may_close_anyone_s_vote_and_viewers_listen_but_do_not_vote(
    client_as, vote, manager, viewer
):
    page = client_as(viewer).get(reverse("voices:vote", args=[vote.pk])).text
    assert "Viewers can listen" in page and 'name="option"' not in page
    listen = client_as(viewer).get(reverse("voices:vote_listen", args=[vote.pk, 1]))
    assert listen.status_code == 200
    assert (
        client_as(viewer)
        .post(reverse("voices:vote_cast", args=[vote.pk]), {"option": 1})
        .status_code
        == 403
    )
    assert close(client_as(manager), vote).status_code == 303


def test_opening_a_vote_from_the_design_page(client_as, design, member):
    response = client_as(member).post(
        reverse("voices:vote_open", args=[design.pk]), {"question": "  "}
    )
    vote = DesignVote.objects.get()
    assert response.status_code == 303 and response["Location"] == reverse(
        "voices:vote", args=[vote.pk]
    )
    assert vote.question == "Which preview fits best?" and vote.opened_by == member
    page = client_as(member).get(reverse("voices:design", args=[design.pk])).text
    assert "Which preview fits best?" in page
    response = client_as(member).post(
        reverse("voices:vote_open", args=[design.pk]), {"question": "x" * 201}
    )
    assert response.status_code == 400 and "at most 200" in response.text


def test_another_workspace_s_vote_is_a_404(client_as, vote, outsider):
    client = client_as(outsider)
    assert client.get(reverse("voices:vote", args=[vote.pk])).status_code == 404
    assert client.get(reverse("voices:vote_listen", args=[vote.pk, 1])).status_code == 404
    assert cast(client, vote, 1).status_code == 404
    assert client.post(reverse("voices:vote_close", args=[vote.pk])).status_code == 404


def test_the_design_page_hides_the_previews_while_a_vote_is_open(
    client_as, vote, design, member, manager
):
    page = client_as(member).get(reverse("voices:design", args=[design.pk])).text
    assert "A blind vote is open" in page and "Preview A" not in page
    for p in design.previews:
        assert p["history_item_id"] not in page
    listen = client_as(member).get(reverse("voices:vote_listen", args=[vote.pk, 1]))
    assert 'filename="option-1.mp3"' in listen["Content-Disposition"]
    close(client_as(manager), vote)
    page = client_as(member).get(reverse("voices:design", args=[design.pk])).text
    assert "Preview A" in page and "A blind vote is open" not in page
