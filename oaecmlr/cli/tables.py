"""Plain tables (title, header, rows of strings) and their renderings: Rich, Markdown, CSV, LaTeX."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from rich import box
from rich.table import Table

from oaecmlr.cli.common import escape


@dataclass
class Section:
    title: str
    header: list[str]
    rows: list[list[str]]
    footer: list[list[str]] = field(default_factory=list)  # e.g. mean ± std rows, set apart
    markup: bool = False  # cells hold Rich markup (else they are shown literally)


def rich_table(section: Section) -> Table:
    table = Table(*map(escape, section.header), title=escape(section.title), title_justify="left", title_style="bold",
                  box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True,
                  min_width=len(section.title))
    table.columns[0].overflow = "fold"
    for i, column in enumerate(table.columns[1:], start=1):  # numbers never fold; names and headers may
        column.min_width = max((len(row[i]) for row in section.rows + section.footer if " " not in row[i]), default=1)
    def cells(row):
        return row if section.markup else [escape(c) for c in row]

    for row in section.rows:
        table.add_row(*cells(row))
    if section.footer:
        table.add_section()
        for row in section.footer:
            table.add_row(*cells(row), style="cyan")
    return table


def markdown(section: Section) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [f"### {section.title}", "", line(section.header), "|" + "|".join("---" for _ in section.header) + "|"]
    lines += [line(row) for row in section.rows + section.footer]
    return "\n".join(lines) + "\n"


def csv_text(header: list[str], rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return out.getvalue()


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    escaped = "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    return escaped.replace("±", r"$\pm$").replace("Δ", r"$\Delta$")


def latex(section: Section) -> str:
    """A `tabular` (first column left, the rest right) with the footer rows after a rule."""
    cols = "l" + "r" * (len(section.header) - 1)

    def line(cells):
        return " & ".join(latex_escape(c) for c in cells) + r" \\"

    lines = [f"% {section.title}", rf"\begin{{tabular}}{{{cols}}}", r"\hline", line(section.header), r"\hline"]
    lines += [line(row) for row in section.rows]
    if section.footer:
        lines.append(r"\hline")
        lines += [line(row) for row in section.footer]
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
