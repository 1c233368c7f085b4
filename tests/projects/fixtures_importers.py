"""Real DOCX and EPUB files for the importer's tests, built here (python-docx, zipfile)."""

import io
import zipfile

import docx

XHTML = """<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops">
<head><title>{head}</title></head>
<body>{body}</body>
</html>"""

CONTAINER = """<?xml version="1.0" encoding="UTF-8"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles>
    <rootfile full-path="{opf}" media-type="application/oebps-package+xml"/>
  </rootfiles>
</container>"""


def docx_bytes(
    paragraphs: list[tuple[str, str]],
    *,
    title: str = "",
    author: str = "",
    language: str = "",
    table: list[list[str]] | None = None,
) -> bytes:
    """A DOCX of ``(style, text)`` paragraphs ("Title", "Heading 1", "Normal"…)."""
    document = docx.Document()
    for style, text in paragraphs:
        document.add_paragraph(text, style=style)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, text in enumerate(row):
                grid.cell(r, c).text = text
    document.core_properties.title = title
    document.core_properties.author = author
    document.core_properties.language = language
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def epub_bytes(
    chapters: list[tuple[str, str, str]],
    *,
    title: str = "",
    creators: tuple[str, ...] = (),
    language: str = "",
    nav: dict[str, str] | None = None,
    ncx: dict[str, str] | None = None,
    spine: list[str] | None = None,
    missing: tuple[str, ...] = (),
    container: bool = True,
    extra: dict[str, bytes] | None = None,
    doctype: str = "",
) -> bytes:
    """An EPUB whose package sits in ``OEBPS/content.opf``.

    ``chapters`` are ``(id, file name, body XHTML)`` in spine order (``spine`` overrides the
    order by ids); ``nav``/``ncx`` map a file name to its table-of-contents title; files in
    ``missing`` are listed in the manifest but left out of the archive."""
    manifest = [
        f'<item id="{cid}" href="{href}" media-type="application/xhtml+xml"/>'
        for cid, href, _body in chapters
    ]
    if nav is not None:
        manifest.append(
            '<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>'
        )
    if ncx is not None:
        manifest.append('<item id="ncx" href="toc.ncx" media-type="application/x-dtbncx+xml"/>')
    order = spine if spine is not None else [cid for cid, _href, _body in chapters]
    metadata = [f"<dc:title>{title}</dc:title>"] if title else []
    metadata += [f"<dc:creator>{creator}</dc:creator>" for creator in creators]
    if language:
        metadata.append(f"<dc:language>{language}</dc:language>")
    opf = f"""<?xml version="1.0" encoding="UTF-8"?>{doctype}
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/">{"".join(metadata)}</metadata>
  <manifest>{"".join(manifest)}</manifest>
  <spine{' toc="ncx"' if ncx is not None else ""}>{
        "".join(f'<itemref idref="{cid}"/>' for cid in order)
    }</spine>
</package>"""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        if container:
            archive.writestr("META-INF/container.xml", CONTAINER.format(opf="OEBPS/content.opf"))
        archive.writestr("OEBPS/content.opf", opf, compress_type=zipfile.ZIP_DEFLATED)
        for _cid, href, body in chapters:
            if href not in missing:
                archive.writestr(
                    f"OEBPS/{href}",
                    XHTML.format(head=href, body=body).encode("utf-8"),
                    compress_type=zipfile.ZIP_DEFLATED,
                )
        if nav is not None:
            links = "".join(f'<li><a href="{h}">{t}</a></li>' for h, t in nav.items())
            body = f'<nav epub:type="toc"><h1>Contents</h1><ol>{links}</ol></nav>'
            archive.writestr("OEBPS/nav.xhtml", XHTML.format(head="Contents", body=body))
        if ncx is not None:
            points = "".join(
                f'<navPoint id="p{i}" playOrder="{i}"><navLabel><text>{t}</text></navLabel>'
                f'<content src="{h}"/></navPoint>'
                for i, (h, t) in enumerate(ncx.items(), 1)
            )
            archive.writestr(
                "OEBPS/toc.ncx",
                '<?xml version="1.0"?><ncx xmlns="http://www.daisy.org/z3986/2005/ncx/" '
                f'version="2005-1"><navMap>{points}</navMap></ncx>',
            )
        for name, data in (extra or {}).items():
            archive.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def add_zip_bomb(data: bytes, member: str, size: int) -> bytes:
    """``data`` (a zip) with ``member`` added: ``size`` bytes of zeros, deflated to little."""
    out = io.BytesIO(data)
    chunk = b"\0" * (1024 * 1024)
    with (
        zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open(member, "w", force_zip64=True) as target,
    ):
        written = 0
        while written < size:
            piece = chunk[: min(len(chunk), size - written)]
            target.write(piece)
            written += len(piece)
    return out.getvalue()
