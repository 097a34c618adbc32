"""The runs screen: every run of the folder in a live table, sortable, filterable, markable."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from oaecmlr import formatting
from oaecmlr.formatting import clock, duration, epoch_text, pct, shorten
from oaecmlr.store.runs import NO_META, RunMeta
from oaecmlr.store.summary import RunSummary

from .fmt import status_text
from .screen_updates import while_shown

# (key, label, width, priority): the columns of `oaecmlr runs` after the mark, and the user's note
# and tags; the name takes the width left. On a narrow screen the highest priorities go first (the
# note, then the start time), then names shorten in the middle. The note column is as wide as the
# longest shown note (at most NOTE_WIDTH, cut with …) and absent when no shown run has one.
COLUMNS = (
    ("mark", "✓", 1, 0), ("name", "name", 0, 0), ("dataset", "dataset", 10, 4), ("status", "status", 10, 0),
    ("epoch", "epoch", 5, 1), ("map", "mAP", 5, 0), ("r1", "R1", 5, 0), ("xcam", "x-cam", 5, 2),
    ("clusters", "clusters", 8, 3), ("start", "start", 11, 5), ("elapsed", "elapsed", 7, 2), ("note", "note", -1, 6),
)
MIN_NAME = 12
NOTE_WIDTH = 30
SORT_KEYS = {
    "name": lambda r: r.name,
    "dataset": lambda r: r.dataset or "",
    "status": lambda r: r.status,
    "epoch": lambda r: r.epoch,
    "map": lambda r: r.best.mAP if r.best else -1.0,
    "r1": lambda r: r.best.rank1 if r.best else -1.0,
    "xcam": lambda r: r.latest_clusters.cross_camera or -1.0 if r.latest_clusters else -1.0,
    "clusters": lambda r: r.latest_clusters.clusters if r.latest_clusters else -1,
    "start": lambda r: r.started or 0.0,
    "elapsed": lambda r: r.elapsed_until(formatting.now()) or 0.0,
}
SORT_CYCLE = ("start", "name", "status", "map", "r1", "elapsed", "dataset", "epoch", "xcam", "clusters")
ROW_STYLE = {"running": "green", "starting": "green"}


def cut_end(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


def row_cells(run: RunSummary, marked: bool, keys: tuple[str, ...], name_width: int,
              meta: RunMeta = NO_META, note_width: int = NOTE_WIDTH) -> tuple[Text, ...]:
    """The cells of a run for the visible column `keys`; a running run's row is green, its status
    cell says what it is, its name is shortened in the middle to `name_width` and its note (tags
    first) cut at the end to `note_width`."""
    style = ROW_STYLE.get(run.status, "")
    best, clusters = run.best, run.latest_clusters
    texts = {"mark": "✓" if marked else " ", "name": shorten(run.name, name_width), "dataset": run.dataset or "-",
             "epoch": epoch_text(run.epoch, run.epochs), "map": pct(best.mAP if best else None),
             "r1": pct(best.rank1 if best else None), "xcam": pct(clusters.cross_camera if clusters else None, 0),
             "clusters": str(clusters.clusters if clusters else "-"), "start": clock(run.started),
             "elapsed": duration(run.elapsed_until(formatting.now())), "note": cut_end(meta.text(), note_width)}
    cells = []
    for key in keys:
        if key == "status":
            cells.append(status_text(run.status))
            continue
        cell = Text(texts[key], style=style)
        if key == "name":
            cell.stylize("bold")
        elif key == "note":
            cell.stylize("italic")
        cells.append(cell)
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
        Binding("escape", "clear_filter", "Clear filter", show=False),
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
        self._layout: list[tuple[str, str, int]] = []
        self._longest = (-1, -1)  # the longest shown name and note the layout was made for

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: part of a name, dataset, status, note or tag  (/)", id="filter", compact=True)
        yield RunsTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static(id="runs-info")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.data_changed()

    @property
    def table(self) -> DataTable:
        return self.query_one("#runs", DataTable)

    def matches(self, run: RunSummary) -> bool:
        """The filter is part of the run's name, dataset, status, note or one of its tags."""
        needle = self.filter
        if needle.startswith("#"):  # `#word`: the tags only, as the note column writes them
            return self.app.meta.get(run.name, NO_META).matches(needle)
        return (not needle or any(needle in (v or "").lower() for v in (run.name, run.dataset, run.status))
                or self.app.meta.get(run.name, NO_META).matches(needle))

    def visible(self) -> list[RunSummary]:
        runs = [r for r in self.app.runs.values() if self.matches(r)]
        runs.sort(key=lambda r: r.name)
        runs.sort(key=SORT_KEYS[self.sort_key], reverse=self.sort_reverse)
        return runs

    def selected(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    @while_shown
    def data_changed(self) -> None:
        runs = self.visible()
        table = self.table
        names = [run.name for run in runs]
        metas = {run.name: self.app.meta.get(run.name, NO_META) for run in runs}
        longest = (max(map(len, names), default=0), max((len(m.text()) for m in metas.values()), default=0))
        if self._columns_dirty or longest != self._longest:
            self._layout = self.column_layout(names, longest[1])
            self._longest = longest
            self._columns_dirty = True
        keys = tuple(key for key, _, _ in self._layout)
        widths = dict((key, width) for key, _, width in self._layout)
        rows = [(run.name, row_cells(run, run.name in self.app.marked, keys, widths["name"], metas[run.name],
                                     widths.get("note", NOTE_WIDTH))) for run in runs]
        if names == self._shown and not self._columns_dirty:
            for name, cells in rows:
                for key, old, new in zip(keys, self._cells[name], cells):
                    if old != new:
                        table.update_cell(name, key, new)
        else:
            selected = self.selected()
            table.clear(columns=self._columns_dirty)
            if self._columns_dirty:
                for key, label, width in self._layout:
                    table.add_column(label, key=key, width=width)
                self._columns_dirty = False
            for name, cells in rows:
                table.add_row(*cells, key=name)
            if selected in {name for name, _ in rows}:
                table.move_cursor(row=table.get_row_index(selected), animate=False)
        self._shown, self._cells = [name for name, _ in rows], dict(rows)
        self._show_info(len(rows))

    def column_layout(self, names: list[str], longest_note: int = 0) -> list[tuple[str, str, int]]:
        """(key, label with the sort arrow, width) of the columns that fit the screen (2 cells of
        padding per column, 2 for the scrollbar). The name column wants its longest name; low-value
        columns are dropped until it gets that (or MIN_NAME), and it takes what is left. The note
        column wants the longest note (up to NOTE_WIDTH) and is left out when there is none."""
        arrow = " ▼" if self.sort_reverse else " ▲"
        note_width = min(longest_note, NOTE_WIDTH)
        layout = [(key, label + (arrow if key == self.sort_key else ""), note_width if width < 0 else width, priority)
                  for key, label, width, priority in COLUMNS if width >= 0 or note_width]
        layout = [(key, label, max(width, len(label)) if width else 0, priority) for key, label, width, priority in layout]
        screen = self.size.width or self.app.size.width
        wanted = max([len(n) for n in names] + [MIN_NAME])

        def spare(columns):
            return screen - sum(w for _, _, w, _ in columns) - 2 * len(columns) - 2

        while spare(layout) < wanted and any(p > 0 for *_, p in layout):
            drop = max((c for c in layout if c[3] > 0), key=lambda c: c[3])
            layout.remove(drop)
        name_width = max(MIN_NAME, min(wanted, spare(layout)))
        return [(key, label, width or name_width) for key, label, width, _ in layout]

    def on_resize(self) -> None:
        self._columns_dirty = True
        self.data_changed()

    def _show_info(self, shown: int) -> None:
        runs = self.app.runs.values()
        counts = {state: sum(r.status == state for r in runs) for state in ("running", "stale", "failed")}
        total = f"{len(runs)} run{'s' * (len(runs) != 1)}"
        parts = [f"{shown} of {total}" if self.filter else total]
        parts += [f"{n} {state}" for state, n in counts.items() if n]
        parts.append(f"mAP/R1: best · sorted by {dict((k, label) for k, label, _, _ in COLUMNS)[self.sort_key]}")
        if self.app.marked:
            parts.append(f"{len(self.app.marked)} marked")
        if self.app.folder_problem:
            parts.append(self.app.folder_problem)
        elif not runs:
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

    def action_clear_filter(self) -> None:
        """Esc, in the filter or the table: every run again, and the table in focus."""
        self.query_one("#filter", Input).value = ""
        self.filter = ""
        self.data_changed()
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
        self._with_selected(self.app.confirm_stop)

    def action_resume(self) -> None:
        self._with_selected(self.app.resume_run)

    def action_clone(self) -> None:
        self._with_selected(self.app.clone_run)
