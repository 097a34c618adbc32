"""The runs screen: every run of the folder in a live table, sortable, filterable, markable."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from .fmt import duration, epoch_text, pct, start_time, status_text
from .model import RunSnapshot

# (key, label, width): the columns of `oaecmlr runs` after the mark; the name takes the width left.
COLUMNS = (
    ("mark", "✓", 1), ("name", "name", 0), ("dataset", "dataset", 10), ("status", "status", 10),
    ("epoch", "epoch", 5), ("map", "mAP", 5), ("r1", "R1", 5), ("clusters", "clusters", 8),
    ("start", "start", 11), ("elapsed", "elapsed", 7),
)
MIN_NAME = 16
SORT_KEYS = {
    "name": lambda r: r.name,
    "dataset": lambda r: r.dataset or "",
    "status": lambda r: r.status,
    "epoch": lambda r: r.epoch,
    "map": lambda r: r.best.mAP if r.best else -1.0,
    "r1": lambda r: r.best.rank1 if r.best else -1.0,
    "clusters": lambda r: r.latest_clusters or -1,
    "start": lambda r: r.started or 0.0,
    "elapsed": lambda r: r.elapsed or 0.0,
}
SORT_CYCLE = ("start", "name", "status", "map", "r1", "elapsed", "dataset", "epoch", "clusters")
ROW_STYLE = {"running": "green", "starting": "green"}


def row_cells(run: RunSnapshot, marked: bool) -> tuple[Text, ...]:
    """The table cells of a run; a running run's row is green, its status cell says what it is."""
    style = ROW_STYLE.get(run.status, "")
    best = run.best
    texts = ["✓" if marked else " ", run.name, run.dataset or "-", "", epoch_text(run), pct(best and best.mAP),
             pct(best and best.rank1), str(run.latest_clusters or "-"), start_time(run.started), duration(run.elapsed)]
    cells = [Text(text, style=style) for text in texts]
    cells[1].stylize("bold")
    cells[3] = status_text(run.status)
    return tuple(cells)


class RunsTable(DataTable):
    """The runs table; its Enter binding is shown in the footer."""

    BINDINGS = [Binding("enter", "select_cursor", "Open")]


class RunsScreen(Screen):
    CSS_PATH = "runs_screen.tcss"
    BINDINGS = [
        Binding("m", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse", "Reverse", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("escape", "focus_table", "Table", show=False),
        Binding("n", "new", "New"),
        Binding("x", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("e", "clone", "Clone"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort_key, self.sort_reverse = "start", True
        self.filter = ""
        self._shown: list[str] = []
        self._cells: dict[str, tuple] = {}
        self._columns_dirty = True

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: part of a name, dataset or status  (/)", id="filter", compact=True)
        yield RunsTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static(id="runs-info")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.data_changed()

    @property
    def table(self) -> DataTable:
        return self.query_one("#runs", DataTable)

    def visible(self) -> list[RunSnapshot]:
        runs = [r for r in self.app.runs.values()
                if not self.filter or any(self.filter in (v or "").lower() for v in (r.name, r.dataset, r.status))]
        runs.sort(key=lambda r: r.name)
        runs.sort(key=SORT_KEYS[self.sort_key], reverse=self.sort_reverse)
        return runs

    def selected(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def data_changed(self) -> None:
        if not self.is_mounted:
            return
        rows = [(run.name, row_cells(run, run.name in self.app.marked)) for run in self.visible()]
        table = self.table
        if [name for name, _ in rows] == self._shown and not self._columns_dirty:
            for name, cells in rows:
                for (key, _, _), old, new in zip(COLUMNS, self._cells[name], cells):
                    if old != new:
                        table.update_cell(name, key, new)
        else:
            selected = self.selected()
            table.clear(columns=self._columns_dirty)
            if self._columns_dirty:
                for key, label, width in self.column_layout():
                    table.add_column(label, key=key, width=width)
                self._columns_dirty = False
            for name, cells in rows:
                table.add_row(*cells, key=name)
            if selected in {name for name, _ in rows}:
                table.move_cursor(row=table.get_row_index(selected), animate=False)
        self._shown, self._cells = [name for name, _ in rows], dict(rows)
        self._show_info(len(rows))

    def column_layout(self) -> list[tuple[str, str, int]]:
        """Labels with the sort arrow, and widths that fit the screen (2 cells of padding per column,
        2 for the scrollbar); the name column gets what is left."""
        arrow = " ▼" if self.sort_reverse else " ▲"
        layout = [(key, label + (arrow if key == self.sort_key else ""), width) for key, label, width in COLUMNS]
        layout = [(key, label, max(width, len(label)) if width else 0) for key, label, width in layout]
        spare = (self.size.width or self.app.size.width) - sum(w for _, _, w in layout) - 2 * len(layout) - 2
        return [(key, label, width or max(MIN_NAME, spare, len(label))) for key, label, width in layout]

    def on_resize(self) -> None:
        self._columns_dirty = True
        self.data_changed()

    def _show_info(self, shown: int) -> None:
        runs = self.app.runs.values()
        counts = {state: sum(r.status == state for r in runs) for state in ("running", "stale", "failed")}
        total = f"{len(runs)} run{'s' * (len(runs) != 1)}"
        parts = [f"{shown} of {total}" if self.filter else total]
        parts += [f"{n} {state}" for state, n in counts.items() if n]
        parts.append(f"mAP/R1: best · sorted by {dict((k, label) for k, label, _ in COLUMNS)[self.sort_key]}")
        if self.app.marked:
            parts.append(f"{len(self.app.marked)} marked")
        if not runs:
            parts.append(f"no runs in {self.app.root} yet: n starts one")
        self.query_one("#runs-info", Static).update(" · ".join(parts))

    # sorting and filtering ----------------------------------------------------------------------
    def sort_by(self, key: str, reverse: bool | None = None) -> None:
        if reverse is None:
            reverse = not self.sort_reverse if key == self.sort_key else key in ("start", "map", "r1", "epoch", "elapsed")
        self.sort_key, self.sort_reverse, self._columns_dirty = key, reverse, True
        self.data_changed()

    def action_sort(self) -> None:
        self.sort_by(SORT_CYCLE[(SORT_CYCLE.index(self.sort_key) + 1) % len(SORT_CYCLE)])

    def action_reverse(self) -> None:
        self.sort_by(self.sort_key, not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        if event.column_key.value in SORT_KEYS:
            self.sort_by(event.column_key.value)

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter = event.value.strip().lower()
        self.data_changed()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.table.focus()

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_focus_table(self) -> None:
        self.table.focus()

    # runs ---------------------------------------------------------------------------------------
    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_run(event.row_key.value)

    def _with_selected(self, action) -> None:
        name = self.selected()
        if name is None:
            self.notify("no run selected", severity="warning")
        else:
            action(name)

    def action_mark(self) -> None:
        self._with_selected(lambda name: self.app.marked.symmetric_difference_update({name}))
        self.data_changed()

    def action_compare(self) -> None:
        marked = [name for name in self._shown if name in self.app.marked]
        marked += sorted(self.app.marked - set(marked))
        if len(marked) < 2:
            self.notify("mark two or more runs with m first", severity="warning")
        else:
            self.app.open_compare(marked)

    def action_new(self) -> None:
        self.app.open_launch()

    def action_stop(self) -> None:
        self._with_selected(self.app.stop_run)

    def action_resume(self) -> None:
        self._with_selected(self.app.resume_run)

    def action_clone(self) -> None:
        self._with_selected(self.app.clone_run)
