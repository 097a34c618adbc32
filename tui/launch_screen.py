"""The launch form: a preset or dataset, data root, GPUs, name and `key=value` overrides.

Start checks the settings and starts a detached run in a worker thread (the app opens its run
screen); a bad preset, key, dataset or name comes back as a notification.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static, TextArea

from oaecmlr.config import available_presets

from .actions import DATASETS, LaunchRequest, parse_overrides


class LaunchScreen(Screen):
    CSS_PATH = "launch_screen.tcss"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Cancel"),
        Binding("ctrl+s", "submit", "Start", priority=True),
    ]

    def __init__(self, request: LaunchRequest | None = None, title: str = "New run") -> None:
        super().__init__()
        self.request = request or LaunchRequest(preset="demo" if "demo" in available_presets() else "")
        self.form_title = title

    def compose(self) -> ComposeResult:
        r = self.request
        choices = list(dict.fromkeys([*available_presets(), *DATASETS, *([r.preset] if r.preset else [])]))
        yield Header()
        yield Static(f"{self.form_title}: settings are checked before anything starts; the run trains "
                     "in the background and keeps going when the dashboard closes.", id="launch-title")
        with VerticalScroll(id="form"):
            with Horizontal(classes="field"):
                yield Label("dataset / preset")
                yield Select([(c, c) for c in choices], value=r.preset or Select.NULL, id="preset", compact=True)
            with Horizontal(classes="field"):
                yield Label("data root")
                yield Input(r.data_root, placeholder="default: $OAECMLR_DATA or ./data/<dataset>", id="data-root",
                            compact=True)
            with Horizontal(classes="field"):
                yield Label("gpus")
                yield Input(r.gpus, placeholder="cpu, 0 or 0,1 (default: the preset's)", id="gpus", compact=True)
            with Horizontal(classes="field"):
                yield Label("name")
                yield Input(r.name, placeholder="default: <preset>-<date>-<time>", id="name", compact=True)
            yield Label("overrides: key=value, one per line or comma-separated (e.g. oae.rho=0, run.epochs=20)")
            yield TextArea("\n".join(r.overrides), id="overrides")
            with Horizontal(id="buttons"):
                yield Button("Start (ctrl+s)", variant="primary", id="start")
                yield Button("Cancel (esc)", id="cancel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#preset", Select).focus()

    def current_request(self) -> LaunchRequest:
        preset = self.query_one("#preset", Select).value
        return LaunchRequest(
            preset="" if preset is Select.NULL else str(preset),
            data_root=self.query_one("#data-root", Input).value,
            gpus=self.query_one("#gpus", Input).value,
            name=self.query_one("#name", Input).value,
            overrides=parse_overrides(self.query_one("#overrides", TextArea).text),
        )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_submit()
        else:
            self.app.pop_screen()

    def action_submit(self) -> None:
        request = self.current_request()
        self.notify(f"checking the settings of {request.name or request.preset or 'the run'}…", timeout=2)
        self.app.launch_run(request)
