"""The report as one self-contained HTML file: inline CSS, figures as base64 PNG, no scripts.

The page is a ``string.Template``; every piece of text is escaped before it is placed. Nothing is
fetched from the network, so the file opens offline and can be mailed as it is.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path
from string import Template

from swiftstudy.report.document import Block, Cell, Document, Renderer, Section

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")
_EMPHASIS = re.compile(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])")

_PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="swiftstudy">
<title>$title · $name</title>
<style>
$css
</style>
</head>
<body>
<header><div class="wrap">
<p class="kicker">swiftstudy</p>
<h1>$title</h1>
<p class="subtitle">$subtitle</p>
</div></header>
<nav><div class="wrap">$nav</div></nav>
<main class="wrap">
$body
</main>
<footer><div class="wrap">Rendered by swiftstudy from the tables in this folder.</div></footer>
</body>
</html>
""")

_CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d8dee4; --subtle: #f6f8fa; --ink: #0f2a44; }
* { box-sizing: border-box; }
html { scroll-behavior: smooth; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 15px/1.6 -apple-system, BlinkMacSystemFont, "Segoe UI", "Noto Sans", Helvetica, Arial,
  sans-serif; }
.wrap { max-width: 1120px; margin: 0 auto; padding: 0 32px; }
header { background: var(--ink); color: #fff; padding: 26px 0 22px; }
header h1 { margin: 0; font-size: 28px; font-weight: 650; letter-spacing: -0.01em; }
.kicker { margin: 0 0 4px; font-size: 12px; letter-spacing: .12em; text-transform: uppercase;
  color: #9fb3c8; }
.subtitle { margin: 6px 0 0; color: #c9d6e3; font-size: 14px; }
nav { position: sticky; top: 0; z-index: 2; background: rgba(255, 255, 255, .96);
  border-bottom: 1px solid var(--line); }
nav .wrap { display: flex; flex-wrap: wrap; gap: 4px 22px; padding-top: 10px;
  padding-bottom: 10px; }
nav a { color: var(--muted); text-decoration: none; font-size: 14px; font-weight: 500; }
nav a:hover { color: var(--fg); }
section { padding-top: 8px; }
h2 { font-size: 21px; margin: 36px 0 14px; padding-bottom: 6px;
  border-bottom: 1px solid var(--line); }
p { margin: 10px 0; }
ul { padding-left: 22px; } li { margin: 7px 0; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 88%;
  background: var(--subtle); border: 1px solid #eaeef2; border-radius: 4px; padding: 0 4px; }
pre { background: var(--subtle); border: 1px solid var(--line); border-radius: 6px;
  padding: 12px 14px; overflow-x: auto; font-size: 13px; line-height: 1.45; }
pre code { background: none; border: 0; padding: 0; font-size: inherit; }
.table-scroll { overflow-x: auto; margin: 12px 0 18px; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { padding: 7px 10px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
th { background: var(--subtle); font-weight: 600; font-size: 13px; color: #31373d; }
tbody tr:hover { background: #fbfcfd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
#verdict-table td:first-child, #comparison-table td:nth-child(-n+2) { min-width: 150px; }
.badge { display: inline-block; padding: 1px 10px; border-radius: 999px; font-size: 12.5px;
  font-weight: 600; white-space: nowrap; }
.badge.positive { background: #d3f5dc; color: #0f5c26; }
.badge.negative { background: #ffe1de; color: #9a1024; }
.badge.neutral { background: #eaeef2; color: #3d444d; }
.badge.muted { background: #f3f4f6; color: #6e7781; }
.badge.warning { background: #fff1b8; color: #6b4a00; }
.notice { border-left: 4px solid #d4a72c; background: #fff8dc; padding: 10px 14px;
  border-radius: 6px; margin: 12px 0; }
.notice.note { border-left-color: #218bff; background: #eef6ff; }
.notice ul { margin: 6px 0 2px; } .notice li { margin: 4px 0; }
figure { margin: 18px 0 30px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto;
  border: 1px solid var(--line); border-radius: 8px; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 8px; }
figcaption a { color: var(--muted); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 6px 20px; margin: 12px 0; }
dt { font-weight: 600; } dd { margin: 0; }
footer { margin-top: 48px; padding: 18px 0 28px; border-top: 1px solid var(--line);
  color: var(--muted); font-size: 13px; }
@media print { nav { display: none; } header { background: none; color: var(--fg); }
  .subtitle, .kicker { color: var(--muted); } }
"""


def render_html(document: Document, base_dir: Path) -> str:
    """The HTML text of ``document``, with its PNG figures (under ``base_dir``) embedded."""
    nav = "".join(
        f'<a href="#{html.escape(s.id)}">{html.escape(s.title)}</a>' for s in document.sections
    )
    body = "\n".join(_HtmlRenderer(base_dir).section(s) for s in document.sections)
    return _PAGE.substitute(
        title=html.escape(document.title),
        name=html.escape(base_dir.name),
        subtitle=html.escape(document.subtitle),
        css=_CSS.strip(),
        nav=nav,
        body=body,
    )


def render_fragment(blocks: Sequence[Block]) -> str:
    """The HTML of blocks without a page around them (figures need a folder: not here)."""
    return "\n".join(_HtmlRenderer(Path()).block(b) for b in blocks)


def inline(text: str) -> str:
    """Escape ``text`` and turn ``**bold**``, ``*emphasis*`` and ```code``` into HTML."""
    pieces = _CODE.split(text)
    out = []
    for index, piece in enumerate(pieces):
        if index % 2:
            out.append(f"<code>{html.escape(piece)}</code>")
        else:
            escaped = _BOLD.sub(r"<strong>\1</strong>", html.escape(piece))
            out.append(_EMPHASIS.sub(r"<em>\1</em>", escaped))
    return "".join(out)


class _HtmlRenderer(Renderer):
    """The blocks as HTML; figures read from ``base_dir`` and embedded."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir

    def section(self, section: Section) -> str:
        blocks = "\n".join(self.block(b) for b in section.blocks)
        return (
            f'<section id="{html.escape(section.id)}">\n<h2>{html.escape(section.title)}</h2>\n'
            f"{blocks}\n</section>"
        )

    def paragraph(self, block) -> str:
        return f"<p>{inline(block.text)}</p>"

    def bullets(self, block) -> str:
        return "<ul>" + "".join(f"<li>{inline(i)}</li>" for i in block.items) + "</ul>"

    def notice(self, block) -> str:
        listed = self.bullets(block) if block.items else ""
        return f'<div class="notice {html.escape(block.tone)}">{inline(block.text)}{listed}</div>'

    def code(self, block) -> str:
        language = f' class="language-{html.escape(block.language)}"' if block.language else ""
        return f"<pre><code{language}>{html.escape(block.text)}</code></pre>"

    def definitions(self, block) -> str:
        items = "".join(f"<dt>{inline(t)}</dt><dd>{inline(d)}</dd>" for t, d in block.items)
        return f"<dl>{items}</dl>"

    def table(self, table) -> str:
        def klass(index: int) -> str:
            return ' class="num"' if index in table.numeric else ""

        head = "".join(f"<th{klass(i)}>{inline(c)}</th>" for i, c in enumerate(table.columns))
        rows = "".join(
            "<tr>" + "".join(f"<td{klass(i)}>{_cell(c)}</td>" for i, c in enumerate(r)) + "</tr>"
            for r in table.rows
        )
        ident = f' id="{html.escape(table.id)}"' if table.id else ""
        return (
            f'<div class="table-scroll"><table{ident}><thead><tr>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table></div>"
        )

    def figure(self, figure) -> str:
        data = base64.b64encode((self.base_dir / figure.png).read_bytes()).decode("ascii")
        links = " ".join(
            f'<a href="{html.escape(p.as_posix())}">{html.escape(p.suffix.lstrip(".").upper())}</a>'
            for p in figure.others
        )
        also = f" ({links})" if links else ""
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(figure.alt)}">'
            f"<figcaption>{inline(figure.caption)}{also}</figcaption></figure>"
        )


def _cell(cell: Cell) -> str:
    if cell.tone is None:
        return inline(cell.text)
    return f'<span class="badge {html.escape(cell.tone)}">{inline(cell.text)}</span>'
