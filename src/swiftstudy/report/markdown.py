"""The report as Markdown (GitHub flavour): the same document, figures linked from ``figures/``."""

from __future__ import annotations

from pathlib import Path

from swiftstudy.report.document import Cell, Document, Renderer, Section


def render_markdown(document: Document) -> str:
    """The Markdown text of ``document``; figure paths stay relative to the result folder."""
    parts = [f"# {document.title}", f"*{_escape_cell(document.subtitle)}*"]
    parts.append(" · ".join(f"[{s.title}](#{s.id})" for s in document.sections))
    parts += [_MarkdownRenderer().section(s) for s in document.sections]
    return "\n\n".join(parts) + "\n"


class _MarkdownRenderer(Renderer):
    """The blocks as Markdown."""

    def section(self, section: Section) -> str:
        return "\n\n".join(
            [f'<a id="{section.id}"></a>\n\n## {section.title}']
            + [self.block(b) for b in section.blocks]
        )

    def paragraph(self, block) -> str:
        return block.text

    def bullets(self, block) -> str:
        return "\n".join(f"- {item}" for item in block.items)

    def notice(self, block) -> str:
        label = "Warning" if block.tone == "warning" else "Note"
        return "\n".join([f"> **{label}:** {block.text}", *(f"> - {i}" for i in block.items)])

    def code(self, block) -> str:
        fence = "````" if "```" in block.text else "```"
        return f"{fence}{block.language}\n{block.text}\n{fence}"

    def definitions(self, block) -> str:
        return "\n".join(f"- **{term}:** {text}" for term, text in block.items)

    def table(self, table) -> str:
        header = "| " + " | ".join(_escape_cell(c) for c in table.columns) + " |"
        rule = "|" + "".join(
            "---:|" if i in table.numeric else "---|" for i in range(len(table.columns))
        )
        rows = ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
        return "\n".join([header, rule, *rows])

    def figure(self, figure) -> str:
        also = ", ".join(f"[{p.suffix.lstrip('.').upper()}]({_path(p)})" for p in figure.others)
        caption = figure.caption + (f" ({also})" if also else "")
        return f"![{figure.alt}]({_path(figure.png)})\n\n*{caption}*"


def _cell(cell: Cell) -> str:
    text = _escape_cell(cell.text)
    return f"**{text}**" if cell.tone in ("positive", "negative", "warning") else text


def _escape_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _path(path: Path) -> str:
    return path.as_posix().replace(" ", "%20")
