"""Pronunciation dictionaries: the services (versions, rules, PLS, locators, projects) and the
pages (every role, bad input, try it on the local engine)."""

import io

import av
import pytest
from django.urls import reverse

from apps.engines.pronunciation import PronunciationRule, pls_parse, pls_write
from apps.generation.errors import ApiRefused
from apps.history.models import Generation
from apps.projects import dictionaries
from apps.projects.dictionaries import DictionaryRefused
from apps.projects.models import PronunciationDictionary, PronunciationVersion
from tests.conftest import HTMX

ALIAS = {"string_to_replace": "Chorus", "type": "alias", "alias": "Bananas"}
PHONEME = {
    "string_to_replace": "tomato",
    "type": "phoneme",
    "phoneme": "təˈmeɪtoʊ",
    "alphabet": "ipa",
}


def make(workspace, user, rules=(ALIAS,), name="Brand names"):
    return dictionaries.dictionary_create(workspace=workspace, user=user, name=name, rules=rules)


def foreign_workspace(outsider):
    return outsider.memberships.get().workspace


# --- Services -----------------------------------------------------------------------------


def test_creating_keeps_the_rules_and_a_first_version(workspace, member):
    d = make(workspace, member, rules=[ALIAS, PHONEME])
    assert d.version_rules_num == 2
    assert [r["string_to_replace"] for r in d.rules] == ["Chorus", "tomato"]
    [version] = PronunciationVersion.objects.filter(dictionary=d)
    assert version.version_id == d.version_id and version.rules == d.rules


def test_adding_a_rule_for_the_same_word_replaces_it_and_makes_a_new_version(workspace, member):
    d = make(workspace, member, rules=[ALIAS, PHONEME])
    first = d.version_id
    d = dictionaries.dictionary_rules_add(
        dictionary=d,
        rules=[
            {"string_to_replace": "Chorus", "type": "alias", "alias": "Kor-us"},
            {"string_to_replace": "NIST", "type": "alias", "alias": "nist"},
        ],
    )
    assert [(r["string_to_replace"], r.get("alias")) for r in d.rules] == [
        ("Chorus", "Kor-us"),
        ("tomato", None),
        ("NIST", "nist"),
    ]
    assert d.version_id != first and d.version_rules_num == 3
    # The old version still says what it said.
    assert dictionaries.version_rules(d, first)[0].alias == "Bananas"
    _, old = pls_parse(dictionaries.dictionary_pls(dictionary=d, version_id=first)[1])
    assert [r.alias for r in old if r.type == "alias"] == ["Bananas"]


def test_removing_and_setting_rules(workspace, member):
    d = make(workspace, member, rules=[ALIAS, PHONEME])
    d = dictionaries.dictionary_rules_remove(dictionary=d, strings=["tomato", "not there"])
    assert [r["string_to_replace"] for r in d.rules] == ["Chorus"]
    before = d.version_id
    same = dictionaries.dictionary_rules_remove(dictionary=d, strings=["not there"])
    assert same.version_id == before  # nothing changed, no new version
    d = dictionaries.dictionary_rules_set(dictionary=d, rules=[PHONEME])
    assert d.rules[0]["type"] == "phoneme" and d.version_rules_num == 1
    assert PronunciationVersion.objects.filter(dictionary=d).count() == 3


@pytest.mark.parametrize(
    ("rules", "words"),
    [
        ([{"string_to_replace": "x", "type": "shout"}], "type must be"),
        ([{"string_to_replace": "", "type": "alias", "alias": "y"}], "empty"),
        (
            [
                {
                    "string_to_replace": "x",
                    "type": "phoneme",
                    "phoneme": "QQ9",
                    "alphabet": "cmu-arpabet",
                }
            ],
            "not a CMU",
        ),
        ([{"string_to_replace": "x", "type": "alias"}], "needs alias"),
    ],
)
def test_bad_rules_are_refused_with_a_message_and_nothing_is_made(workspace, member, rules, words):
    with pytest.raises(DictionaryRefused) as refused:
        make(workspace, member, rules=rules)
    assert words in str(refused.value) and refused.value.status == 400
    assert not PronunciationDictionary.objects.exists()


def test_a_pls_file_round_trips_and_bad_or_big_files_are_refused(workspace, member):
    rules = (
        PronunciationRule("Chorus", "alias", alias="Bananas"),
        PronunciationRule("tomato", "phoneme", phoneme="T AH0 M EY1 T OW2", alphabet="cmu-arpabet"),
    )
    d = dictionaries.dictionary_create_from_pls(
        workspace=workspace, user=member, name="From file", data=pls_write(rules, lang="en-GB")
    )
    assert d.language == "en-GB" and dictionaries.dictionary_rules(d) == rules
    filename, data = dictionaries.dictionary_pls(dictionary=d)
    assert filename == f"from-file-{d.version_id}.pls"
    assert pls_parse(data)[1] == rules
    with pytest.raises(DictionaryRefused, match="not well-formed XML"):
        dictionaries.dictionary_create_from_pls(
            workspace=workspace, user=member, name="Bad", data=b"<lexicon"
        )
    with pytest.raises(DictionaryRefused, match="at most 1,024 kB"):
        dictionaries.dictionary_create_from_pls(
            workspace=workspace, user=member, name="Big", data=b" " * (1024 * 1024 + 1)
        )
    assert PronunciationDictionary.objects.count() == 1


def test_the_list_pages_with_a_cursor_searches_and_hides_archived(workspace, member):
    made = [make(workspace, member, name=f"Dictionary {i}") for i in range(5)]
    dictionaries.dictionary_update(dictionary=made[0], archived=True)
    page = dictionaries.dictionaries_page(
        workspace=workspace, page_size=2, sort="name", descending=False
    )
    seen = [d.name for d in page.items]
    while page.has_more:
        page = dictionaries.dictionaries_page(
            workspace=workspace, page_size=2, sort="name", descending=False, cursor=page.next_cursor
        )
        seen += [d.name for d in page.items]
    assert seen == [f"Dictionary {i}" for i in range(5)]
    shown = dictionaries.dictionaries_page(workspace=workspace, include_archived=False)
    assert "Dictionary 0" not in [d.name for d in shown.items]
    found = dictionaries.dictionaries_page(workspace=workspace, search="ary 3")
    assert [d.name for d in found.items] == ["Dictionary 3"]
    with pytest.raises(DictionaryRefused, match="cursor"):
        dictionaries.dictionaries_page(workspace=workspace, cursor="garbage!")


def test_locators_give_the_rules_of_each_version_in_order(workspace, member):
    a = make(workspace, member, rules=[ALIAS], name="A")
    b = make(workspace, member, rules=[PHONEME], name="B")
    old = a.version_id
    a = dictionaries.dictionary_rules_set(
        dictionary=a, rules=[{"string_to_replace": "Chorus", "type": "alias", "alias": "Kor"}]
    )
    rules = dictionaries.rules_for_locators(
        workspace,
        [
            {"pronunciation_dictionary_id": b.public_id},
            {"pronunciation_dictionary_id": a.public_id, "version_id": old},
        ],
    )
    assert [r.string_to_replace for r in rules] == ["tomato", "Chorus"]
    assert rules[1].alias == "Bananas"
    latest = dictionaries.rules_for_locators(
        workspace, [{"pronunciation_dictionary_id": a.public_id}]
    )
    assert latest[0].alias == "Kor"


def test_unknown_foreign_or_too_many_locators_are_refused(workspace, member, outsider):
    mine = make(workspace, member)
    theirs = make(foreign_workspace(outsider), outsider, name="Theirs")
    cases = [
        ([{"pronunciation_dictionary_id": "nope"}], 404, "pronunciation_dictionary_not_found"),
        (
            [{"pronunciation_dictionary_id": theirs.public_id}],
            404,
            "pronunciation_dictionary_not_found",
        ),
        (
            [{"pronunciation_dictionary_id": mine.public_id, "version_id": theirs.version_id}],
            404,
            "pronunciation_dictionary_version_not_found",
        ),
        (
            [{"pronunciation_dictionary_id": mine.public_id}] * 4,
            400,
            "too_many_pronunciation_dictionaries",
        ),
    ]
    for locators, status, code in cases:
        with pytest.raises(ApiRefused) as refused:
            dictionaries.rules_for_locators(workspace, locators)
        assert (refused.value.status, refused.value.code) == (status, code)
        assert refused.value.message


def test_a_project_gets_exactly_the_dictionaries_attached(workspace, member, outsider, project):
    a, b = make(workspace, member, name="A"), make(workspace, member, name="B", rules=[PHONEME])
    dictionaries.project_dictionaries_set(project, [a.public_id, b])
    assert set(project.dictionaries.all()) == {a, b}
    dictionaries.project_dictionaries_set(project, [b.public_id])
    assert list(project.dictionaries.all()) == [b]
    theirs = make(foreign_workspace(outsider), outsider, name="Theirs")
    with pytest.raises(DictionaryRefused):
        dictionaries.project_dictionaries_set(project, [theirs.public_id])
    assert list(project.dictionaries.all()) == [b]


# --- Pages: roles -------------------------------------------------------------------------


@pytest.fixture
def dictionary(workspace, member):
    return make(workspace, member, rules=[ALIAS, PHONEME])


def _pages(d):
    return [
        ("get", reverse("projects:dictionaries"), {}),
        ("get", reverse("projects:dictionary_new"), {}),
        ("get", reverse("projects:dictionary", args=[d.public_id]), {}),
        ("get", reverse("projects:dictionary_download", args=[d.public_id]), {}),
    ]


def _posts(d):
    return [
        (
            "projects:dictionary_rule_add",
            {
                "string_to_replace": "NIST",
                "kind": "alias",
                "replacement": "nist",
                "case_sensitive": "on",
                "word_boundaries": "on",
            },
        ),
        ("projects:dictionary_rule_remove", {"string_to_replace": "tomato"}),
        ("projects:dictionary_edit", {"name": "Renamed", "description": "", "language": "en"}),
        ("projects:dictionary_archive", {}),
    ]


@pytest.mark.parametrize("role", ["owner", "manager", "member"])
def test_members_and_above_change_a_dictionary(request, client_as, dictionary, role):
    client = client_as(request.getfixturevalue(role))
    for name, data in _posts(dictionary):
        response = client.post(reverse(name, args=[dictionary.public_id]), data)
        assert response.status_code == 303, (name, response.content[:500])
    dictionary.refresh_from_db()
    assert dictionary.name == "Renamed" and dictionary.archived
    assert [r["string_to_replace"] for r in dictionary.rules] == ["Chorus", "NIST"]


def test_a_viewer_reads_and_downloads_but_cannot_change(client_as, viewer, dictionary):
    client = client_as(viewer)
    for _method, url, _data in _pages(dictionary):
        status = client.get(url).status_code
        assert status == (403 if url.endswith("/new/") else 200), url
    page = client.get(reverse("projects:dictionary", args=[dictionary.public_id])).content
    assert b"Add the rule" not in page and b"Tomato".lower() in page.lower()
    for name, data in _posts(dictionary):
        assert client.post(reverse(name, args=[dictionary.public_id]), data).status_code == 403
    assert client.post(reverse("projects:dictionary_new"), {"name": "X"}).status_code == 403
    dictionary.refresh_from_db()
    assert dictionary.version_rules_num == 2 and not dictionary.archived


def test_an_outsider_gets_404_and_anonymous_is_sent_to_sign_in(client_as, outsider, dictionary):
    client = client_as(outsider)
    for _method, url, _data in _pages(dictionary)[2:]:
        assert client.get(url).status_code == 404
    for name, data in _posts(dictionary):
        assert client.post(reverse(name, args=[dictionary.public_id]), data).status_code == 404
    anonymous = client_as(None)
    for _method, url, _data in _pages(dictionary):
        response = anonymous.get(url)
        assert response.status_code == 302 and "login" in response["Location"]


def test_wrong_methods_are_405(client_as, member, dictionary):
    client = client_as(member)
    assert (
        client.get(reverse("projects:dictionary_rule_add", args=[dictionary.public_id])).status_code
        == 405
    )
    assert client.post(reverse("projects:dictionaries")).status_code == 405


# --- Pages: what they do ------------------------------------------------------------------


def test_the_list_says_what_it_is_for_when_empty_per_role(client_as, member, viewer):
    assert (
        b"Create the first dictionary"
        in client_as(member).get(reverse("projects:dictionaries")).content
    )
    viewer_page = client_as(viewer).get(reverse("projects:dictionaries")).content
    assert b"Viewers cannot create them" in viewer_page
    assert b"Create the first dictionary" not in viewer_page


def _new_data(**extra):
    data = {
        "name": "Cast",
        "description": "Names of the cast",
        "language": "en",
        "rules-TOTAL_FORMS": "3",
        "rules-INITIAL_FORMS": "0",
        "rules-0-string_to_replace": "Siobhan",
        "rules-0-kind": "alias",
        "rules-0-replacement": "Shivawn",
        "rules-0-case_sensitive": "on",
        "rules-0-word_boundaries": "on",
        "rules-1-string_to_replace": "tomato",
        "rules-1-kind": "cmu",
        "rules-1-replacement": "T AH0 M EY1 T OW2",
        "rules-1-word_boundaries": "on",
        "rules-2-kind": "alias",
    }
    data.update(extra)
    return data


def test_a_member_creates_a_dictionary_from_the_rules_table(client_as, member, workspace):
    response = client_as(member).post(reverse("projects:dictionary_new"), _new_data())
    assert response.status_code == 303
    d = PronunciationDictionary.objects.get(workspace=workspace)
    assert response["Location"] == reverse("projects:dictionary", args=[d.public_id])
    assert (d.name, d.language, d.created_by) == ("Cast", "en", member)
    assert d.rules == [
        {
            "string_to_replace": "Siobhan",
            "type": "alias",
            "alias": "Shivawn",
            "case_sensitive": True,
            "word_boundaries": True,
        },
        {
            "string_to_replace": "tomato",
            "type": "phoneme",
            "phoneme": "T AH0 M EY1 T OW2",
            "alphabet": "cmu-arpabet",
            "case_sensitive": False,
            "word_boundaries": True,
        },
    ]


def test_a_member_imports_a_pls_file_and_bad_files_say_why(client_as, member, workspace):
    client = client_as(member)
    pls = pls_write([PronunciationRule("Chorus", "alias", alias="Bananas")])
    data = _new_data(**{"rules-TOTAL_FORMS": "0"})
    data["lexicon"] = io.BytesIO(b"<lexicon><lexeme><grapheme>x</grapheme></lexeme>")
    data["lexicon"].name = "bad.pls"
    bad = client.post(reverse("projects:dictionary_new"), data)
    assert bad.status_code == 400 and b"not well-formed XML" in bad.content
    assert not PronunciationDictionary.objects.exists()
    data["lexicon"] = io.BytesIO(pls)
    data["lexicon"].name = "brand.pls"
    assert client.post(reverse("projects:dictionary_new"), data).status_code == 303
    d = PronunciationDictionary.objects.get()
    assert d.rules[0]["alias"] == "Bananas"


def test_a_half_filled_row_is_a_400_next_to_the_field(client_as, member):
    data = _new_data(**{"rules-2-string_to_replace": "Aoife"})
    response = client_as(member).post(reverse("projects:dictionary_new"), data)
    assert response.status_code == 400 and b"Say how the word is pronounced." in response.content
    assert not PronunciationDictionary.objects.exists()


def test_a_bad_rule_on_the_page_is_a_400_with_the_reason(client_as, member, dictionary):
    data = {"string_to_replace": "x", "kind": "cmu", "replacement": "QQ9"}
    url = reverse("projects:dictionary_rule_add", args=[dictionary.public_id])
    response = client_as(member).post(url, data)
    assert response.status_code == 400 and b"not a CMU Arpabet phoneme" in response.content


def test_htmx_rule_changes_answer_the_rules_partial(client_as, member, dictionary):
    url = reverse("projects:dictionary_rule_remove", args=[dictionary.public_id])
    response = client_as(member, **HTMX).post(url, {"string_to_replace": "Chorus"})
    assert response.status_code == 200
    assert b"<html" not in response.content and b'id="dictionary-rules"' in response.content
    assert b"Bananas" not in response.content and b"tomato" in response.content


def test_export_gives_the_pls_of_the_latest_or_an_older_version(client_as, viewer, dictionary):
    old = dictionary.version_id
    dictionaries.dictionary_rules_remove(dictionary=dictionary, strings=["Chorus"])
    client = client_as(viewer)
    url = reverse("projects:dictionary_download", args=[dictionary.public_id])
    latest = client.get(url)
    assert "attachment" in latest["Content-Disposition"]
    assert [r.string_to_replace for r in pls_parse(latest.content)[1]] == ["tomato"]
    older = client.get(url + f"?version={old}")
    assert [r.string_to_replace for r in pls_parse(older.content)[1]] == ["Chorus", "tomato"]
    assert client.get(url + "?version=nope").status_code == 404


def test_a_project_form_attaches_dictionaries(client_as, member, viewer, project, dictionary):
    url = reverse("projects:project_dictionaries", args=[project.public_id])
    next_url = reverse("projects:dictionaries")
    assert client_as(viewer).post(url, {"dictionaries": [dictionary.public_id]}).status_code == 403
    response = client_as(member).post(
        url, {"dictionaries": [dictionary.public_id], "next": next_url}
    )
    assert response.status_code == 303 and response["Location"] == next_url
    assert list(project.dictionaries.all()) == [dictionary]
    away = client_as(member).post(url, {"next": "https://evil.example/"})
    assert away.status_code == 303
    assert away["Location"] == reverse("projects:detail", args=[project.public_id])
    assert not project.dictionaries.exists()


def test_an_outsider_cannot_attach_to_a_project(client_as, outsider, project, dictionary):
    url = reverse("projects:project_dictionaries", args=[project.public_id])
    assert (
        client_as(outsider).post(url, {"dictionaries": [dictionary.public_id]}).status_code == 404
    )


def _seconds(generation) -> float:
    with generation.file.open("rb") as handle, av.open(io.BytesIO(handle.read())) as container:
        stream = container.streams.audio[0]
        return sum(f.samples for f in container.decode(stream)) / stream.codec_context.sample_rate


def test_try_it_speaks_without_and_with_the_dictionary(client_as, member, voice, dictionary):
    url = reverse("projects:dictionary_try", args=[dictionary.public_id])
    response = client_as(member).post(url, {"text": "Chorus is great.", "voice_id": voice.voice_id})
    assert response.status_code == 200, response.content[:800]
    plain, ruled = Generation.objects.order_by("id")
    assert plain.engine == ruled.engine == "local"
    assert plain.recipe.get("pronunciation_dictionary") is None
    assert ruled.recipe["pronunciation_dictionary"] == dictionary.public_id
    for clip in (plain, ruled):
        assert _seconds(clip) > 0.5
        assert reverse("history:audio", args=[clip.pk]).encode() in response.content
        assert clip.usage_event.credits == 0
    assert b"Bananas is great." in response.content
    with plain.file.open("rb") as a, ruled.file.open("rb") as b:
        assert a.read() != b.read()
