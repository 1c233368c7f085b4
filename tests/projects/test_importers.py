"""The script importer: every format lands in its chapters and blocks, bad files are refused."""

import codecs
import time
import zipfile

import pytest

from apps.projects.importers import (
    BLOCK_MAX_CHARS,
    MAX_SCRIPT_CHARS,
    MAX_UNPACKED_BYTES,
    ImportedChapter,
    ImportedScript,
    ImportRefused,
    format_of,
    import_file,
    import_text,
)

from .fixtures_importers import add_zip_bomb, docx_bytes, epub_bytes

UNICODE = "Ça va? 你好，世界。 שָׁלוֹם עולם مرحبا بالعالم 👩‍👩‍👧 e\u0301te\u0301 Ωμέγα"


def chapters(script: ImportedScript) -> list[tuple[str, list[str]]]:
    return [(chapter.title, list(chapter.blocks)) for chapter in script.chapters]


# --- TXT -------------------------------------------------------------------------------


def test_txt_chapters_start_at_heading_lines_and_paragraphs_at_blank_lines():
    text = (
        "Prologue\n\nBefore it all\nbegan.\n\n"
        "Chapter 1\n\nIt was a dark\nand stormy night.\n\nThe rain fell.\n\n"
        "* * *\n\n"
        "CHAPTER TWO: The Sea\nWaves came in.\n\n"
        "Part II\n\nThe second part.\n\n"
        "# The Long Road\n\nWalking on.\n\n"
        "Epilogue\n\nThe end.\n"
    )
    script = import_text(text, title="Storm")
    assert script == ImportedScript(
        title="Storm",
        author="",
        language="",
        chapters=(
            ImportedChapter("Prologue", ("Before it all began.",)),
            ImportedChapter("Chapter 1", ("It was a dark and stormy night.", "The rain fell.")),
            ImportedChapter("CHAPTER TWO: The Sea", ("Waves came in.",)),
            ImportedChapter("Part II", ("The second part.",)),
            ImportedChapter("The Long Road", ("Walking on.",)),
            ImportedChapter("Epilogue", ("The end.",)),
        ),
    )


def test_txt_without_headings_is_one_chapter_named_by_the_title_or_chapter_1():
    text = (
        "First paragraph,\nwrapped.\r\n\r\n"
        "Chapter one of his life ended when he left.\nHe went on.\n"
    )
    assert chapters(import_text(text, title="Memoir")) == [
        (
            "Memoir",
            [
                "First paragraph, wrapped.",
                "Chapter one of his life ended when he left. He went on.",
            ],
        )
    ]
    assert chapters(import_text(text))[0][0] == "Chapter 1"


def test_txt_text_before_the_first_heading_is_an_opening_chapter():
    script = import_text("A Tale\nby Someone\n\nChapter I\n\nOnce.\n")
    assert chapters(script) == [("Opening", ["A Tale by Someone"]), ("Chapter I", ["Once."])]


def test_a_long_paragraph_is_split_at_sentence_ends_below_the_block_limit():
    sentences = [f"Sentence number {i} tells a little more of the story." for i in range(120)]
    paragraph = " ".join(sentences)
    assert len(paragraph) > 2 * BLOCK_MAX_CHARS
    blocks = import_text(f"Chapter 1\n\n{paragraph}\n\nShort one.").chapters[0].blocks
    assert len(blocks) >= 3
    assert blocks[-1] == "Short one."
    for block in blocks[:-1]:
        assert 0 < len(block) <= BLOCK_MAX_CHARS
        assert block.startswith("Sentence number ") and block.endswith("of the story.")
    assert " ".join(blocks[:-1]) == paragraph


# --- Markdown --------------------------------------------------------------------------


def test_markdown_front_matter_single_title_and_second_level_chapters():
    text = """---
title: "The Garden"
author: Ada Lovelace
lang: en_GB
---
# Garden Notes

An *opening* note with a [link](https://example.com/x) and ![a rose](rose.png).

## Spring

Seeds go **in** the _ground_ and `soil`.
A wrapped line.

- first item
- second ~~item~~

> A quoted line.

```python
print("kept words")
```

### Detail

Small text.

## Summer
Sun\\*shine.

[ref]: https://example.com
"""
    script = import_text(text, fmt="md", title="ignored")
    assert (script.title, script.author, script.language) == ("The Garden", "Ada Lovelace", "en-GB")
    assert chapters(script) == [
        ("The Garden", ["An opening note with a link and a rose."]),
        (
            "Spring",
            [
                "Seeds go in the ground and soil. A wrapped line.",
                "first item",
                "second item",
                "A quoted line.",
                'print("kept words")',
                "Detail",
                "Small text.",
            ],
        ),
        ("Summer", ["Sun*shine."]),
    ]


def test_markdown_repeated_top_headings_are_chapters_and_lower_ones_blocks():
    text = "# One\n\nAlpha.\n\n## Inside\n\nBeta.\n\n# Two\n\nGamma.\n\nSetext\n------\n\nDelta."
    script = import_text(text, fmt="md")
    assert script.title == ""
    assert chapters(script) == [
        ("One", ["Alpha.", "Inside", "Beta."]),
        ("Two", ["Gamma.", "Setext", "Delta."]),
    ]


def test_markdown_single_title_without_lower_headings_is_title_and_chapter():
    script = import_text("# Only\n\nWords here.", fmt="md")
    assert script.title == "Only"
    assert chapters(script) == [("Only", ["Words here."])]


# --- HTML ------------------------------------------------------------------------------

HTML = """<!DOCTYPE html>
<html lang="pt-BR"><head><title>Livro</title><meta name="author" content="Ana Lima">
<style>p { color: red }</style><script>var secret = "SCRIPT-TEXT";</script></head>
<body>
<nav><h2>Menu</h2><a href="/">Home</a></nav>
<h1>Livro</h1>
<h2>Um<br>Começo</h2>
<p>Primeiro &amp; <em>único</em>
   parágrafo.</p>
<script>document.write("SCRIPT-TEXT")</script>
<div>Texto direto<p>dentro</p>depois</div>
<h2>Dois</h2>
<ul><li>item um</li><li>item <b>dois</b></li></ul>
<blockquote>Uma citação.</blockquote>
<h3>Sub</h3><p>Fim.</p><noscript>NOSCRIPT-TEXT</noscript>
</body></html>"""


def test_html_chapters_blocks_and_metadata():
    script = import_file(name="livro.html", data=HTML.encode("utf-8"))
    assert (script.title, script.author, script.language) == ("Livro", "Ana Lima", "pt-BR")
    assert chapters(script) == [
        ("Um Começo", ["Primeiro & único parágrafo.", "Texto direto", "dentro", "depois"]),
        ("Dois", ["item um", "item dois", "Uma citação.", "Sub", "Fim."]),
    ]


def test_html_script_style_and_nav_text_is_not_imported():
    script = import_text(HTML, fmt="html")
    words = " ".join(b for c in script.chapters for b in c.blocks) + " ".join(
        c.title for c in script.chapters
    )
    assert "Primeiro" in words
    for dropped in ("SCRIPT-TEXT", "color", "Menu", "Home", "NOSCRIPT-TEXT"):
        assert dropped not in words


def test_html_and_epub_never_resolve_external_entities(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    doctype = f'<!DOCTYPE html [<!ENTITY xxe SYSTEM "file://{secret}">]>'
    page = f"{doctype}<html><body><h1>T</h1><p>Visible &xxe; text.</p></body></html>"
    html_words = str(import_text(page, fmt="html"))
    assert "Visible" in html_words and "TOP-SECRET" not in html_words

    data = epub_bytes(
        [("c1", "c1.xhtml", "<h1>Start</h1><p>Plain words &xxe; here.</p>")],
        title="&xxe;Book",
        doctype=f'<!DOCTYPE package [<!ENTITY xxe SYSTEM "file://{secret}">]>',
    )
    epub_words = str(import_file(name="b.epub", data=data))
    assert "Plain words" in epub_words and "TOP-SECRET" not in epub_words


# --- DOCX ------------------------------------------------------------------------------


def test_docx_headings_paragraphs_tables_and_core_properties():
    data = docx_bytes(
        [
            ("Title", "The Lighthouse"),
            ("Normal", "A foreword before any chapter."),
            ("Heading 1", "Chapter One"),
            ("Normal", "The keeper woke\tearly."),
            ("Normal", "   "),
            ("Heading 2", "Morning"),
            ("Normal", "Fog everywhere."),
            ("Heading 1", "Chapter Two"),
            ("List Bullet", "A listed line."),
        ],
        title="The Lighthouse (core)",
        author="R. Keeper",
        language="en-US",
        table=[["Cell A", "Cell B"]],
    )
    script = import_file(name="book.docx", data=data)
    assert (script.title, script.author, script.language) == (
        "The Lighthouse (core)",
        "R. Keeper",
        "en-US",
    )
    assert chapters(script) == [
        ("The Lighthouse (core)", ["A foreword before any chapter."]),
        ("Chapter One", ["The keeper woke early.", "Morning", "Fog everywhere."]),
        ("Chapter Two", ["A listed line.", "Cell A", "Cell B"]),
    ]


def test_docx_title_comes_from_the_title_style_when_core_properties_have_none():
    data = docx_bytes([("Title", "Styled Title"), ("Heading 1", "Only"), ("Normal", "Text.")])
    script = import_file(name="x.docx", data=data)
    assert script.title == "Styled Title"
    assert chapters(script) == [("Only", ["Text."])]


def test_a_truncated_docx_is_refused():
    data = docx_bytes([("Normal", "Hello there.")])
    with pytest.raises(ImportRefused, match=r"^This DOCX could not be read: "):
        import_file(name="broken.docx", data=data[: len(data) // 2])
    with pytest.raises(ImportRefused, match=r"^This DOCX could not be read: "):
        import_file(name="notzip.docx", data=b"just some text, not a zip")


def _opened_members(monkeypatch) -> list[str]:
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *args, **kwargs):
        opened.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    return opened


def test_a_docx_zip_bomb_is_refused_before_its_member_is_read(monkeypatch):
    data = add_zip_bomb(
        docx_bytes([("Normal", "Tiny.")]), "word/media/bomb.bin", MAX_UNPACKED_BYTES + 1
    )
    assert len(data) < 1024 * 1024  # small on the wire
    opened = _opened_members(monkeypatch)
    with pytest.raises(ImportRefused, match=r"unpacks to more than 100 MB"):
        import_file(name="bomb.docx", data=data)
    assert "word/media/bomb.bin" not in opened


# --- EPUB ------------------------------------------------------------------------------


def test_epub_chapters_follow_the_spine_with_nav_titles():
    data = epub_bytes(
        [
            ("cover", "cover.xhtml", '<div><img src="cover.jpg" alt=""/></div>'),
            ("c2", "text/two.xhtml", "<h1>Second Heading</h1><p>Second body.</p>"),
            ("c1", "one.xhtml", "<h1>1</h1><p>First <i>body</i>.</p><p>More &#8212; words.</p>"),
            ("c3", "three.xhtml", "<p>No heading here.</p><h2>Later</h2><p>After.</p>"),
            ("remote", "http://example.com/evil.xhtml", "<p>never</p>"),
        ],
        spine=["cover", "c1", "c2", "remote", "c3"],
        title="Two Roads",
        creators=("Ann One", "Bob Two"),
        language="fr",
        nav={"one.xhtml": "Chapter One: Start", "text/two.xhtml#frag": "The Second"},
    )
    script = import_file(name="roads.epub", data=data)
    assert (script.title, script.author, script.language) == ("Two Roads", "Ann One, Bob Two", "fr")
    assert chapters(script) == [
        ("Chapter One: Start", ["First body.", "More — words."]),
        ("The Second", ["Second body."]),
        ("Chapter 3", ["No heading here.", "Later", "After."]),
    ]


def test_epub2_ncx_titles_and_first_heading_fallback():
    data = epub_bytes(
        [
            ("a", "a.xhtml", "<h2>Heading A</h2><p>Alpha.</p>"),
            ("b", "b.xhtml", "<h2>Heading B</h2><p>Beta.</p>"),
        ],
        ncx={"a.xhtml": "NCX Title A"},
    )
    assert chapters(import_file(name="x.epub", data=data)) == [
        ("NCX Title A", ["Alpha."]),
        ("Heading B", ["Beta."]),
    ]


def test_an_epub_without_container_xml_is_refused():
    data = epub_bytes([("a", "a.xhtml", "<p>Alpha.</p>")], container=False)
    with pytest.raises(ImportRefused) as refused:
        import_file(name="x.epub", data=data)
    assert str(refused.value) == "This EPUB is damaged: its container.xml is missing."


def test_an_epub_whose_spine_names_a_missing_file_is_refused():
    data = epub_bytes(
        [("a", "a.xhtml", "<p>Alpha.</p>"), ("b", "b.xhtml", "<p>Beta.</p>")],
        missing=("b.xhtml",),
    )
    with pytest.raises(ImportRefused) as refused:
        import_file(name="x.epub", data=data)
    assert str(refused.value) == (
        "This EPUB is damaged: its spine names OEBPS/b.xhtml, which is not in the file."
    )


def test_an_epub_zip_bomb_is_refused_before_its_member_is_read(monkeypatch):
    data = epub_bytes(
        [("a", "a.xhtml", "<p>Alpha.</p>"), ("b", "b.xhtml", "")], missing=("b.xhtml",)
    )
    data = add_zip_bomb(data, "OEBPS/b.xhtml", MAX_UNPACKED_BYTES + 1)
    opened = _opened_members(monkeypatch)
    with pytest.raises(ImportRefused, match=r"^This EPUB unpacks to more than 100 MB"):
        import_file(name="bomb.epub", data=data)
    assert "OEBPS/a.xhtml" in opened  # it did read the chapters before the bomb
    assert "OEBPS/b.xhtml" not in opened


# --- Limits, types, encodings -----------------------------------------------------------


def test_an_upload_over_20_mb_is_refused_with_its_size():
    data = b"word " * (21 * 1024 * 1024 // 5)
    started = time.monotonic()
    with pytest.raises(ImportRefused) as refused:
        import_file(name="huge.txt", data=data)
    assert time.monotonic() - started < 1
    assert str(refused.value) == "This file is 21.0 MB; uploads are limited to 20 MB."


def test_a_script_over_the_character_limit_is_refused_with_both_numbers():
    paragraph = "A sentence of words. " * 100  # 2,100 characters with its spaces
    text = "\n\n".join([paragraph] * (MAX_SCRIPT_CHARS // 2000 + 5))
    with pytest.raises(ImportRefused) as refused:
        import_text(text)
    message = str(refused.value)
    assert "2,000,000" in message
    total = (len(paragraph) - 1) * (MAX_SCRIPT_CHARS // 2000 + 5)
    assert f"{total:,}" in message


def test_a_binary_file_named_txt_is_refused():
    with pytest.raises(ImportRefused, match=r"^This file is not text"):
        import_file(name="photo.txt", data=b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR words")


def test_an_unknown_type_is_refused_naming_the_accepted_ones():
    with pytest.raises(ImportRefused) as refused:
        import_file(name="song.mp3", data=b"ID3\x03\x00\x00\x00")
    assert str(refused.value) == (
        "Chorus cannot import “song.mp3”: the accepted types are "
        "TXT, Markdown (.md), DOCX, EPUB or HTML."
    )


def test_format_comes_from_the_extension_else_from_the_bytes():
    epub = epub_bytes([("a", "a.xhtml", "<p>Alpha.</p>")])
    document = docx_bytes([("Normal", "Hi.")])
    assert format_of("Book.EPUB", b"") == "epub"
    assert format_of("notes.markdown", b"") == "md"
    assert format_of(r"C:\\docs\\page.htm", b"") == "html"
    assert format_of("upload", epub) == "epub"
    assert format_of("upload", document) == "docx"
    assert format_of("upload.bin", b"  <!DOCTYPE html><html><p>x</p></html>") == "html"
    assert format_of("blob", b"plain words", content_type="text/plain") == "txt"
    with pytest.raises(ImportRefused):
        format_of("blob", b"plain words")
    assert chapters(import_file(name="upload", data=epub)) == [("Chapter 1", ["Alpha."])]


def test_an_empty_script_is_refused():
    for text, fmt in (("  \n\n \t", "txt"), ("# Title\n\n---\n", "md"), ("* * *", "txt")):
        with pytest.raises(ImportRefused, match=r"^The script is empty: "):
            import_text(text, fmt=fmt)
    with pytest.raises(
        ImportRefused, match=r"^The script is empty: no words were found in this HTML"
    ):
        import_file(name="a.html", data=b"<html><body><script>alert(1)</script></body></html>")
    empty_epub = epub_bytes([("a", "a.xhtml", "<div>  </div>")])
    with pytest.raises(ImportRefused, match=r"^The script is empty: no words .* EPUB\.$"):
        import_file(name="a.epub", data=empty_epub)


@pytest.mark.parametrize(
    "encode",
    [
        lambda s: s.encode("utf-8"),
        lambda s: codecs.BOM_UTF8 + s.encode("utf-8"),
        lambda s: s.encode("utf-16"),  # with its BOM
        lambda s: codecs.BOM_UTF16_BE + s.encode("utf-16-be"),
    ],
    ids=["utf8", "utf8-bom", "utf16", "utf16-be"],
)
def test_unicode_text_round_trips_in_every_encoding(encode):
    script = import_file(name="u.txt", data=encode(f"Chapter 1\n\n{UNICODE}\n"))
    assert chapters(script) == [("Chapter 1", [UNICODE])]


def test_cp1252_is_the_fallback_for_bytes_that_are_not_utf8():
    script = import_file(name="old.txt", data=b"Caf\xe9 \x93quoted\x94 \x80 5.")
    assert chapters(script) == [("Chapter 1", ["Café “quoted” € 5."])]


def test_unicode_round_trips_through_markdown_html_docx_and_epub():
    assert chapters(import_text(f"## {UNICODE}\n\n{UNICODE}", fmt="md")) == [(UNICODE, [UNICODE])]
    page = f'<html lang="he"><body><h1>{UNICODE}</h1><p>{UNICODE}</p></body></html>'
    script = import_file(name="u.html", data=page.encode("utf-8"))
    assert (script.language, chapters(script)) == ("he", [(UNICODE, [UNICODE])])
    script = import_file(
        name="u.docx",
        data=docx_bytes([("Heading 1", UNICODE), ("Normal", UNICODE)], author=UNICODE),
    )
    assert (script.title, script.author, chapters(script)) == (
        UNICODE,
        UNICODE,
        [(UNICODE, [UNICODE])],
    )
    script = import_file(
        name="u.epub",
        data=epub_bytes([("a", "a.xhtml", f"<h1>{UNICODE}</h1><p>{UNICODE}</p>")], title=UNICODE),
    )
    assert (script.title, chapters(script)) == (UNICODE, [(UNICODE, [UNICODE])])


def test_pasted_text_with_nul_or_a_binary_format_is_refused():
    with pytest.raises(ImportRefused, match="NUL"):
        import_text("a\x00b")
    with pytest.raises(ImportRefused, match="not “docx”"):
        import_text("words", fmt="docx")
