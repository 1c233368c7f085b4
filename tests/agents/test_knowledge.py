"""Knowledge documents: text read from real TXT, Markdown, PDF and DOCX files, every kind of
bad file refused with nothing written, passages cut at paragraphs and sentences, BM25 ranking,
a document in use kept, and the knowledge page."""

import io
import zipfile

import pytest
from django.urls import reverse

from apps.agents import knowledge, services
from apps.agents.config import AgentConfig
from apps.agents.knowledge import KnowledgeRefused, chunked, knowledge_search, words
from apps.agents.models import KnowledgeChunk, KnowledgeDocument
from tests.conftest import HTMX

pytestmark = pytest.mark.django_db


def make_pdf(lines: list[str]) -> bytes:
    """A one-page PDF written by hand (Helvetica text), with a correct cross-reference table."""
    text = " ".join(
        "(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") Tj T*"
        for line in lines
    )
    content = f"BT /F1 12 Tf 72 720 Td 14 TL {text} ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return out


def make_docx() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Returns policy", level=1)
    document.add_paragraph("Customers may return any item within thirty days of delivery.")
    document.add_paragraph("Refunds reach the original card in five working days.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "Helpline"
    table.rows[0].cells[1].text = "0800 123 456"
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def pdf_writer_bytes(*, encrypt: bool) -> bytes:
    import pypdf

    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=200, height=200)
    if encrypt:
        writer.encrypt("secret", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def stored_files(media) -> list:
    return [p for p in media.rglob("*") if p.is_file()] if media.exists() else []


# --- Reading files ---------------------------------------------------------------------------


def test_text_is_read_from_a_real_pdf(workspace, member, media):
    data = make_pdf(["The lighthouse opens at ten.", "Tickets cost (about) four euros."])
    doc = knowledge.document_add_file(
        workspace=workspace, user=member, filename="Guide.pdf", data=data
    )
    assert doc.name == "Guide"
    assert doc.kind == "file" and doc.content_type == "application/pdf"
    assert "The lighthouse opens at ten." in doc.text
    assert "Tickets cost (about) four euros." in doc.text
    assert doc.size_bytes == len(data)
    assert doc.file.read() == data  # the original kept
    # One passage: the PDF's lines are one paragraph.
    assert [c.text for c in doc.chunks.all()] == [doc.text.replace("\n", " ")]


def test_text_is_read_from_a_real_docx_with_its_table(workspace, member, media):
    doc = knowledge.document_add_file(
        workspace=workspace, user=member, filename="returns.docx", data=make_docx(), name="Returns"
    )
    assert doc.name == "Returns"
    assert "Returns policy\n\nCustomers may return any item within thirty days" in doc.text
    assert "Helpline · 0800 123 456" in doc.text


def test_markdown_loses_its_markup_and_keeps_its_words(workspace, member, media):
    data = (
        b"# Parking\n\nThe **car park** is behind the [town hall](https://example.com).\n\n"
        b"> Free after _six_ pm.\n"
    )
    doc = knowledge.document_add_file(
        workspace=workspace, user=member, filename="parking.md", data=data
    )
    assert doc.text == "Parking\n\nThe car park is behind the town hall.\n\nFree after six pm."


def test_plain_text_in_any_common_encoding(workspace, member, media):
    for data in (
        "Café opens at 8.\r\nCroissants sell out by 10.".encode(),
        "Café opens at 8.".encode("utf-16"),
        "Café opens at 8.".encode("cp1252"),
    ):
        fmt, text = knowledge.text_of_file("notes.txt", data)
        assert fmt == "txt" and text.startswith("Café opens at 8.")


@pytest.mark.parametrize(
    "filename,data,message",
    [
        ("song.mp3", b"ID3\x03\x00 not text", "cannot read “song.mp3”"),
        ("junk.txt", bytes(range(256)) * 40, "not text"),
        ("empty.txt", b"", "empty"),
        ("blank.txt", b"  \n\n \t ", "no text"),
        ("fake.pdf", b"Just some words, not a PDF.", "not a PDF"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage", "PDF"),
        ("fake.docx", b"Plain words pretending.", "not a DOCX"),
        ("cut.docx", b"PK\x03\x04" + b"\x00" * 40, "not a complete zip archive"),
        ("renamed.txt", b"%PDF-1.4\n%...", "is a PDF file"),
    ],
)
def test_a_bad_file_is_refused_with_a_message_and_nothing_written(
    workspace, member, media, filename, data, message
):
    with pytest.raises(KnowledgeRefused) as refused:
        knowledge.document_add_file(workspace=workspace, user=member, filename=filename, data=data)
    assert message in str(refused.value)
    assert not KnowledgeDocument.objects.exists()
    assert not KnowledgeChunk.objects.exists()
    assert stored_files(media) == []


def test_an_encrypted_pdf_and_a_pdf_without_text_are_refused(workspace, member, media):
    with pytest.raises(KnowledgeRefused, match="encrypted"):
        knowledge.text_of_file("secret.pdf", pdf_writer_bytes(encrypt=True))
    with pytest.raises(KnowledgeRefused, match="no text to read"):
        knowledge.text_of_file("scan.pdf", pdf_writer_bytes(encrypt=False))


def test_a_docx_that_unpacks_too_large_is_refused_before_it_is_read(workspace, member, media):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", "<w:document/>")
        archive.writestr("word/media/bomb.bin", b"\x00" * (knowledge.MAX_UNPACKED_BYTES + 1))
    data = buffer.getvalue()
    assert len(data) < knowledge.MAX_FILE_BYTES  # small on disk: a bomb
    with pytest.raises(KnowledgeRefused, match="unpacks to"):
        knowledge.document_add_file(workspace=workspace, user=member, filename="b.docx", data=data)
    assert not KnowledgeDocument.objects.exists()


def test_size_and_length_limits(workspace, member, media):
    with pytest.raises(KnowledgeRefused, match="at most 10 MB"):
        knowledge.text_of_file("big.txt", b"a" * (knowledge.MAX_FILE_BYTES + 1))
    with pytest.raises(KnowledgeRefused, match="500,000") as refused:
        knowledge.document_add_text(
            workspace=workspace, user=member, name="Long", text="word " * 100_001
        )
    assert refused.value.field == "text"
    with pytest.raises(KnowledgeRefused) as refused:
        knowledge.document_add_text(workspace=workspace, user=member, name="  ", text="Words.")
    assert refused.value.field == "name"
    assert not KnowledgeDocument.objects.exists()


# --- Passages --------------------------------------------------------------------------------


def sentence(i: int) -> str:
    return f"Sentence number {i} says something about topic {i % 7} and its details."


def test_a_short_text_is_one_passage_and_small_paragraphs_stay_together():
    assert chunked("One fact. Another fact.") == ["One fact. Another fact."]
    paragraphs = [" ".join(sentence(i + 3 * p) for i in range(3)) for p in range(3)]
    chunks = chunked("\n\n".join(paragraphs))
    assert len(chunks) == 1 and chunks[0].count("\n\n") == 2


def test_a_paragraph_that_fits_starts_its_own_passage_instead_of_being_cut():
    first = " ".join(sentence(i) for i in range(7))  # ~490 characters
    second = " ".join(sentence(i) for i in range(10, 15))  # ~350: does not fit after the first
    chunks = chunked(first + "\n\n" + second)
    assert chunks == [first, second]


def test_a_long_paragraph_is_cut_between_sentences_with_one_sentence_of_overlap():
    sentences = [sentence(i) for i in range(40)]
    chunks = chunked(" ".join(sentences))
    assert len(chunks) > 3
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert len(before) <= knowledge.CHUNK_CHARS
        assert before.endswith(".")
        last = before.rsplit(". ", 1)[-1]
        assert after.startswith(last)  # the overlap
    for s in sentences:
        assert any(s in chunk for chunk in chunks)


def test_a_sentence_longer_than_a_passage_is_cut_at_its_clauses():
    long = ", ".join(f"clause {i} of a very long sentence" for i in range(60)) + "."
    chunks = chunked(long)
    assert all(len(c) <= knowledge.CHUNK_CHARS for c in chunks)
    assert "".join(c.replace(" ", "") for c in chunks).count("clause") >= 60


def test_words_are_case_folded_without_stop_words_or_plural_s():
    assert words("The Refunds of THE shop's Bus, and its Glasses") == [
        "refund",
        "shop",
        "bus",
        "glasse",
    ]


# --- Retrieval -------------------------------------------------------------------------------

CORPUS = {
    "Shop": [
        "Opening hours: the shop opens at nine in the morning and closes at six in the evening "
        "from Monday to Saturday. On Sundays and public holidays the shop is closed.",
        "Parking is free for two hours in the car park behind the town hall. Bicycles can be "
        "left at the racks by the entrance.",
        "The shop sells bread, cakes and coffee. Coffee beans are roasted on site every week.",
    ],
    "Policies": [
        "Returns: customers may return any item within thirty days with the receipt. Refunds "
        "are paid back to the original card within five working days.",
        "Delivery: orders over fifty euros are delivered for free within the city. Delivery "
        "takes two days; express delivery the next morning costs eight euros.",
        "Gift cards can be bought at the counter and are valid for one year from purchase.",
    ],
}


@pytest.fixture
def corpus(workspace, member, media):
    docs = {}
    for name, paragraphs in CORPUS.items():
        docs[name] = knowledge.document_add_text(
            workspace=workspace, user=member, name=name, text="\n\n".join(paragraphs)
        )
    return docs


def ids(corpus):
    return [d.document_id for d in corpus.values()]


@pytest.mark.parametrize(
    "query,expected",
    [
        ("How long does a refund take to reach my card?", "Refunds are paid back"),
        ("When do you OPEN on Sunday?", "Opening hours"),
        ("where can I park my car", "Parking is free"),
        ("is delivery free?", "Delivery: orders over fifty euros"),
        ("how long is a gift card valid", "Gift cards"),
    ],
)
def test_the_passage_that_answers_ranks_first(workspace, corpus, query, expected):
    found = knowledge_search(workspace, ids(corpus), query, k=3)
    assert found, query
    assert expected in found[0].text
    assert [c.score for c in found] == sorted((c.score for c in found), reverse=True)
    assert len(found) <= 3


def test_the_chunks_are_passages_of_their_documents(corpus):
    # With every paragraph well under a passage, each document is one passage here...
    assert KnowledgeChunk.objects.filter(document=corpus["Shop"]).count() == 1


def test_retrieval_looks_only_at_the_documents_asked_for_in_the_workspace(
    workspace, corpus, outsider
):
    from apps.workspaces.models import Membership

    assert knowledge_search(workspace, [corpus["Shop"].document_id], "refund card") == []
    assert knowledge_search(workspace, ids(corpus), "the and of") == []  # stop words only
    assert knowledge_search(workspace, [], "refund") == []
    elsewhere = Membership.objects.get(user=outsider).workspace
    assert knowledge_search(elsewhere, ids(corpus), "refund") == []


def test_retrieval_ranks_passages_within_a_long_document(workspace, member, media):
    filler = " ".join(
        f"Paragraph filler {i} talks about weather, trains and the history of the town."
        for i in range(60)
    )
    text = filler + "\n\nThe secret password for the staff room is tangerine.\n\n" + filler
    doc = knowledge.document_add_text(workspace=workspace, user=member, name="Long", text=text)
    assert doc.chunks.count() > 5
    found = knowledge_search(workspace, [doc.document_id], "What is the staff room password?")
    assert "tangerine" in found[0].text


# --- Deleting --------------------------------------------------------------------------------


def test_a_document_an_agent_uses_is_kept_and_the_refusal_names_the_agent(
    workspace, member, agent, document
):
    with pytest.raises(KnowledgeRefused, match="Front desk"):
        knowledge.document_delete(document=document)
    assert KnowledgeDocument.objects.filter(pk=document.pk).exists()
    config = services.agent_config(agent).with_changes(knowledge=[])
    services.agent_update(agent=agent, user=member, config=config)
    knowledge.document_delete(document=document)
    assert not KnowledgeDocument.objects.filter(pk=document.pk).exists()
    assert not KnowledgeChunk.objects.filter(document_id=document.pk).exists()


def test_an_old_version_using_a_document_does_not_keep_it(workspace, member, voices, media):
    doc = knowledge.document_add_text(workspace=workspace, user=member, name="A", text="Words.")
    agent = services.agent_create(
        workspace=workspace, user=member, name="B",
        config=AgentConfig(voice_id=voices[0], knowledge=[doc.document_id]),
    )  # fmt: skip
    services.agent_update(agent=agent, user=member, config=AgentConfig(voice_id=voices[0]))
    knowledge.document_delete(document=doc)
    assert not KnowledgeDocument.objects.filter(pk=doc.pk).exists()


# --- The page --------------------------------------------------------------------------------


def test_the_empty_page_says_what_knowledge_is_for(client_as, member, viewer, media):
    body = client_as(member).get(reverse("agents:knowledge")).content.decode()
    assert "No documents yet" in body and "Upload" in body
    body = client_as(viewer).get(reverse("agents:knowledge")).content.decode()
    assert "Viewers cannot add documents" in body
    assert reverse("agents:knowledge_add") not in body


def test_a_member_adds_text_plain_and_with_htmx(client_as, member, media):
    url = reverse("agents:knowledge_add")
    data = {"kind": "text", "text-name": "Hours", "text-text": "We open at nine."}
    response = client_as(member).post(url, data)
    assert response.status_code == 303 and response["Location"] == reverse("agents:knowledge")
    data["text-name"] = "Hours again"
    response = client_as(member, **HTMX).post(url, data)
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert 'id="knowledge"' in body and "Hours again" in body and "Added “Hours again”" in body
    assert KnowledgeDocument.objects.count() == 2


def test_a_member_uploads_a_pdf(client_as, member, media):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("menu.pdf", make_pdf(["Soup of the day: tomato."]))
    response = client_as(member).post(
        reverse("agents:knowledge_add"), {"kind": "file", "file-file": upload}
    )
    assert response.status_code == 303
    doc = KnowledgeDocument.objects.get()
    assert doc.name == "menu" and "Soup of the day: tomato." in doc.text
    body = client_as(member).get(reverse("agents:document", args=[doc.document_id]))
    assert "Soup of the day: tomato." in body.content.decode()


def test_a_bad_upload_shows_its_error_next_to_the_file_field(client_as, member, media):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("clip.mp3", b"ID3 audio")
    response = client_as(member, **HTMX).post(
        reverse("agents:knowledge_add"), {"kind": "file", "file-file": upload}
    )
    body = response.content.decode()
    assert response.status_code == 400 and "<html" not in body
    error = body.split('id="id_file-file_error"', 1)[1].split("</div>", 1)[0]
    assert "cannot read “clip.mp3”" in error
    assert not KnowledgeDocument.objects.exists()


def test_empty_text_fields_show_their_errors(client_as, member, media):
    response = client_as(member).post(reverse("agents:knowledge_add"), {"kind": "text"})
    body = response.content.decode()
    assert response.status_code == 400
    assert 'id="id_text-name_error"' in body and 'id="id_text-text_error"' in body


def test_deleting_a_document_in_use_is_a_409_that_names_the_agent(
    client_as, member, agent, document
):
    url = reverse("agents:knowledge_delete", args=[document.document_id])
    response = client_as(member, **HTMX).post(url)
    assert response.status_code == 409
    assert "Front desk" in response.content.decode()
    assert KnowledgeDocument.objects.filter(pk=document.pk).exists()


def test_deleting_an_unused_document(client_as, member, document):
    url = reverse("agents:knowledge_delete", args=[document.document_id])
    response = client_as(member).post(url)
    assert response.status_code == 303
    assert not KnowledgeDocument.objects.exists()
