"""The report as a small document model, rendered to HTML and to Markdown alike.

``content`` decides what the report says; ``html`` and ``markdown`` decide how it looks, each a
:class:`Renderer` with one method a block type. Text fields may use Markdown's inline marks
``**bold**``, ``*emphasis*`` and ```code```.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: Tones of a table cell shown as a badge, and of a notice.
TONE_POSITIVE = "positive"
TONE_NEGATIVE = "negative"
TONE_NEUTRAL = "neutral"
TONE_MUTED = "muted"
TONE_WARNING = "warning"
TONE_NOTE = "note"


@dataclass(frozen=True)
class Cell:
    """A table cell; with a tone it is shown as a coloured badge."""

    text: str
    tone: str | None = None


@dataclass(frozen=True)
class Table:
    """A table with a header row; ``numeric`` columns are right-aligned."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    id: str | None = None
    numeric: frozenset[int] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Notice:
    """A highlighted remark, a ``warning`` or a ``note``, optionally with a list of items."""

    text: str
    tone: str = TONE_WARNING
    items: tuple[str, ...] = ()


@dataclass(frozen=True)
class FigureBlock:
    """A figure saved as PNG (embedded in HTML), with its other formats beside it."""

    png: Path
    caption: str
    alt: str
    others: tuple[Path, ...] = ()


@dataclass(frozen=True)
class CodeBlock:
    text: str
    language: str = ""


@dataclass(frozen=True)
class Definitions:
    """Term–description pairs (a two-column list)."""

    items: tuple[tuple[str, str], ...]


Block = Paragraph | Bullets | Notice | Table | FigureBlock | CodeBlock | Definitions


class Renderer:
    """An output format: a subclass gives each block type its method, as :meth:`block` names them.

    A format that lacks one fails on its first block, whichever block that is.
    """

    def block(self, block: Block) -> str:
        """The text of ``block`` in this format."""
        methods = {
            Paragraph: self.paragraph,
            Bullets: self.bullets,
            Notice: self.notice,
            Table: self.table,
            FigureBlock: self.figure,
            CodeBlock: self.code,
            Definitions: self.definitions,
        }
        if type(block) not in methods:
            raise TypeError(f"unknown block {type(block).__name__}")
        return methods[type(block)](block)


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Document:
    """A whole report; figure paths are relative to ``base_dir`` in the renderers."""

    title: str
    subtitle: str
    sections: tuple[Section, ...]
