"""``stretto live``: a Textual terminal UI to watch and steer one run.

The app holds a :class:`~stretto.api.RunWatch` (the run's journal, folded as it grows) and redraws
from its snapshots: a header (progress, spend against the budget, wall time and the critical-path
estimate of time left, providers backing off), the task table attention first, and tabs about
the selected task (its agent log following live, its diff, gates, the scheduler's and router's
decisions, its events, and a timeline of every attempt per agent slot). Each key binding is an
action that calls the run API (:class:`~stretto.api.RunHandle`) in a worker thread and says
what the engine answered, or the error. Quitting detaches: the run goes on.

Imported only by the ``live`` command: ``stretto --help`` never loads Textual.
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.widgets import Input, Log, Static, TabbedContent, TabPane

from stretto import api
from stretto.errors import StrettoError
from stretto.frontends.live_widgets import (
    COLUMNS,
    KEYS,
    Ask,
    Confirm,
    FollowLog,
    Lines,
    TaskTable,
    cells,
    header_lines,
    timeline_lines,
)
from stretto.frontends.view import event_line

TABS = ("log", "diff", "gates", "explain", "events", "timeline")
#: Rows the table holds at most (attention first; the rest are counted in a last row and
#: found with the filter): a person does not scroll 2,000 rows, and Textual measures each cell.
MAX_ROWS = 300
MORE = "\x00more"  # the key of that last row (no task id can hold a NUL)


class LiveApp(App[None]):
    """Watch and steer one run; see the module docstring.

    Args:
        handle: the run.
        clock: epoch seconds now (snapshot tests fix it).
        poll: seconds between looks at the journal while the run goes on.
        probe: called with the records just read, once the widgets show them (benchmarks time
            the next paint of the screen from there).
    """

    TITLE = "stretto live"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #header { padding: 0 1; background: $boost; }
    #said { height: auto; padding: 0 1; color: $text-muted; display: none; }
    #said.shown { display: block; }
    #filter { display: none; height: 3; }
    #filter.shown { display: block; }
    #tasks { height: 1fr; min-height: 5; }
    #details { height: 1fr; min-height: 7; }
    Log { scrollbar-size-horizontal: 1; }
    #keys { dock: bottom; height: auto; padding: 0 1; background: $panel; }
    """
    BINDINGS = [
        Binding("q", "quit", "detach"),
        # A priority binding is handled as the app reads the key, before it hands the next
        # keys to the focused widget: so the keys typed right after `/` reach the filter box.
        Binding("slash", "filter", "filter", priority=True),
        Binding("c", "cancel_task", "cancel task"),
        Binding("r", "retry_task", "retry"),
        Binding("p", "pause", "pause"),
        Binding("u", "unpause", "unpause"),
        Binding("b", "budget", "budget"),
        Binding("plus,equals_sign", "parallel(1)", "+agent", key_display="+"),
        Binding("minus", "parallel(-1)", "-agent", key_display="-"),
        Binding("s", "stop", "stop run"),
        Binding("w", "worktree", "copy path"),
        Binding("o", "shell", "shell", show=False),
        Binding("escape", "unfilter", "clear filter", show=False),
    ]

    def __init__(
        self,
        handle: api.RunHandle,
        *,
        clock: Callable[[], float] = time.time,
        poll: float = 0.05,
        probe: Callable[[list[api.Record]], None] | None = None,
    ) -> None:
        super().__init__()
        self.handle = handle
        self.run_watch = api.RunWatch(handle, clock=clock)
        self.clock = clock
        self.poll = poll
        self.probe = probe
        self.snap: api.LiveSnapshot | None = None
        self.shown: list[str] = []  # task ids in table order
        self.filter_text = ""
        self.selected: str | None = None
        self.followed: tuple[Path, int] | None = None  # the agent log shown, and how far read
        self.drawn_at = 0.0
        self.soft_at = 0.0  # when running rows' time and latest line were last redrawn
        self.cells: dict[str, tuple[str, ...]] = {}  # the table's cells as drawn
        self.last_said = ""
        self.header_text = ""
        self.stale: set[str] = set()  # tabs whose content is out of date (rebuilt when shown)
        self.timeline_at = 0.0
        self.secrets = api.secret_values()

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Lines(id="header")
        yield Static("", id="said")
        yield Input(placeholder="filter tasks (enter: keep, escape: clear)", id="filter")
        yield TaskTable(COLUMNS, id="tasks")
        with Vertical(id="details"), TabbedContent(id="tabs", initial="log"):
            for name in TABS:
                with TabPane(name, id=name):
                    if name == "timeline":
                        yield Static("", id="timeline-view")
                    else:
                        yield FollowLog(id=f"{name}-view", highlight=False, max_lines=20_000)
        yield Static(KEYS, id="keys")

    def on_mount(self) -> None:
        self.main = self.screen  # queries go here, also while a dialog is on top
        table = self.main.query_one("#tasks", TaskTable)
        self.title = f"stretto live {self.handle.run_id}"
        self._tick(force=True)
        # What exists now (the journal read so far, the widgets) lives as long as the app: out
        # of the collector's sight, a long run's records are not walked again at every full
        # collection (a pause of the screen each time).
        gc.freeze()
        table.focus()
        self.set_interval(self.poll, self._tick)

    # ------------------------------------------------------------------ following

    def _tick(self, force: bool = False) -> None:
        with contextlib.suppress(NoMatches):  # the app is closing: its widgets are gone
            self._look(force)

    def _look(self, force: bool) -> None:
        try:
            batch = self.run_watch.poll()
            now = time.monotonic()
            if batch or force or now - self.drawn_at >= 1.0:  # elapsed times tick once a second
                self.drawn_at = now
                self._draw(batch)
        except StrettoError as error:  # a damaged journal, a run not started yet: said once
            said = f"cannot read the run: {error.message}"
            if said != self.last_said:
                self._say(said, error=True)
            return
        self._follow_log()
        if batch and self.probe is not None:
            self.probe(batch)

    def _draw(self, batch: list[api.Record]) -> None:
        soft_due = time.monotonic() - self.soft_at >= 1.0
        snap = self.snap = self.run_watch.snapshot(read_logs=soft_due)
        lines = header_lines(snap)
        width = max(40, self.size.width - 2)
        if snap.attention:
            more = f" (+{len(snap.attention) - 1} more)" if len(snap.attention) > 1 else ""
            lines.append(_fit(f"needs you: {snap.attention[0]}", width - len(more)) + more)
        lines = [_fit(line, width) for line in lines]
        header = "\n".join(lines)
        if header != self.header_text:  # an unchanged header is not rendered again
            self.header_text = header
            self.main.query_one("#header", Lines).show(lines)
        self._fill_table(snap)
        task = self.selected
        mine = [r for r in batch if r.fields.get("task") == task] if task else []
        if mine:
            if "events" not in self.stale and self._active() == "events":
                events = self.main.query_one("#events-view", Log)
                events.write_lines([event_line(record) for record in mine])
            else:
                self.stale.add("events")
            if any(r.type == "gate_result" for r in mine):
                self.stale.add("gates")
            if any(r.type in ("route", "decision", "control") for r in mine):
                self.stale.add("explain")
            if any(r.type in ("attempt_finished", "merged") for r in mine):
                self.stale.add("diff")
        if batch and self._active() == "timeline" and time.monotonic() - self.timeline_at >= 1:
            self.stale.add("timeline")
        self._refresh_active()

    def _active(self) -> str:
        return str(self.main.query_one("#tabs", TabbedContent).active)

    def _refresh_active(self) -> None:
        """Rebuild the visible tab if what it shows changed (hidden tabs wait until shown: a
        busy run must not make the UI redraw what nobody sees)."""
        name = self._active()
        task = self.selected
        if name not in self.stale or task is None:
            return
        self.stale.discard(name)
        if name == "events":
            events = self.main.query_one("#events-view", Log)
            events.clear()
            events.write_lines([event_line(r) for r in self.run_watch.task_records(task)])
        elif name == "gates":
            self._show_gates(task)
        elif name == "explain":
            explain = self.main.query_one("#explain-view", Log)
            explain.clear()
            try:
                lines = [line or " " for line in self.run_watch.explain(task)]
                explain.write_lines(lines, scroll_end=False)
            except StrettoError as error:
                explain.write_line(error.message)
        elif name == "diff":
            self._load_diff(task)
        elif name == "timeline":
            self._draw_timeline()

    def _fill_table(self, snap: api.LiveSnapshot) -> None:
        table = self.main.query_one("#tasks", TaskTable)
        needle = self.filter_text.lower()
        rows: list[tuple[str, tuple[str, ...]]] = []
        hidden = 0
        for row in snap.rows:  # attention first: what is cut off is the least urgent
            row_cells = cells(row, 10_000)
            if needle and not any(needle in c.lower() for c in row_cells if c):
                continue
            if len(rows) >= MAX_ROWS:
                hidden += 1
                continue
            rows.append((row.id, row_cells))
        room = self._detail_room([c for _, c in rows])
        shown = [(key, (*c[:-1], _fit(c[-1], room))) for key, c in rows]
        # A running task's elapsed time and latest line change all the time: they are redrawn
        # once a second; anything else (a state, a new row) at once.
        now = time.monotonic()
        if now - self.soft_at >= 1.0:
            self.soft_at = now
        else:
            for i, (key, row_cells) in enumerate(shown):
                old = self.cells.get(key)
                if old is not None and row_cells[0] == ">" and old[:5] == row_cells[:5]:
                    shown[i] = (key, (*row_cells[:5], old[5], *row_cells[6:-1], old[-1]))
        self.cells = dict(shown)
        if hidden:
            more = f"{hidden} more task(s): / filters them"
            shown.append((MORE, ("", "", *[""] * (len(COLUMNS) - 3), more)))
        table.set_rows(shown)
        self.shown = [key for key, _ in shown]
        if self.selected is None and shown and shown[0][0] != MORE:
            self._select(shown[table.cursor][0])

    def _detail_room(self, rows: list[tuple[str, ...]]) -> int:
        """How wide the detail column may be so that the table needs no sideways scrolling."""
        used = 4  # the table's scrollbar and a margin
        for i, name in enumerate(COLUMNS[:-1]):
            used += 2 + max([len(name), *(len(c[i]) for c in rows)])
        return max(12, self.size.width - used)

    def on_task_table_highlighted(self, event: TaskTable.Highlighted) -> None:
        if event.key != self.selected and event.key != MORE:
            self._select(event.key)

    def _select(self, task: str) -> None:
        self.selected = task
        self.followed = None
        for name in TABS[:-1]:
            self.main.query_one(f"#{name}-view", Log).clear()
        self.stale = set(TABS) - {"log", "timeline"}
        self._refresh_active()
        self._follow_log()

    def _show_gates(self, task: str) -> None:
        view = self.main.query_one("#gates-view", Log)
        view.clear()
        gates = self.run_watch.gates(task)
        if not gates:
            view.write_line("no gate has run for this task yet")
        for gate in gates:
            verdict = "pass" if gate["passed"] else "FAIL"
            stage = f" ({gate['stage']})" if gate["stage"] else ""
            view.write_line(
                f"attempt {gate['attempt']}  {verdict}  {gate['gate']}{stage}: {gate['summary']}",
                scroll_end=False,
            )
            if gate["log"].strip():
                lines = ["    " + line for line in gate["log"].rstrip().splitlines()]
                view.write_lines(lines, scroll_end=False)

    def _follow_log(self) -> None:
        """Append what the selected task's agent wrote since the last look (its last attempt)."""
        task = self.selected
        if task is None or self.snap is None or task not in self.snap.status.tasks:
            return
        if self._active() != "log":
            return  # read on from where it was when the tab is shown again
        attempt = self.snap.status.tasks[task].attempts
        view = self.main.query_one("#log-view", Log)
        if attempt < 1:
            if self.followed is None:
                view.clear()
                view.write("no attempt has started yet\n")
                self.followed = (Path(), 0)
            return
        path = self.handle.run_dir / "tasks" / task / str(attempt) / "agent.log"
        if self.followed is None or self.followed[0] != path:
            view.clear()
            view.write(f"==> {path.relative_to(self.handle.run_dir)}\n")
            self.followed = (path, max(0, _size(path) - 64_000))
        offset = self.followed[1]
        size = _size(path)
        if size <= offset:
            return
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(size - offset)
        whole = data.rfind(b"\n") + 1 or len(data)
        self.followed = (path, offset + whole)
        text = api.redact_secrets(data[:whole].decode("utf-8", "replace"), self.secrets)
        view.write(str(text))

    @work(thread=True, exclusive=True, group="diff")
    def _load_diff(self, task: str) -> None:
        try:
            text = api.task_diff(self.handle, task) or "(no change)"
        except StrettoError as error:
            text = error.message
        self.call_from_thread(self._put_diff, task, text)

    def _put_diff(self, task: str, text: str) -> None:
        if task != self.selected:
            return
        view = self.main.query_one("#diff-view", Log)
        view.clear()
        view.write(str(api.redact_secrets(text, self.secrets)))

    def _draw_timeline(self) -> None:
        self.timeline_at = time.monotonic()
        width = self.main.query_one("#details").size.width or 80
        lines = timeline_lines(self.run_watch.timeline(), width, self.clock())
        self.main.query_one("#timeline-view", Static).update(Text("\n".join(lines)))

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id in ("diff", "timeline"):
            self.stale.add(str(event.pane.id))  # always fresh when opened
        self._refresh_active()
        self._follow_log()

    # ------------------------------------------------------------------ filter

    def action_filter(self) -> None:
        box = self.main.query_one("#filter", Input)
        if self.focused is box or self.screen is not self.main:
            if isinstance(self.focused, Input):  # `/` typed into a text box is text
                self.focused.insert_text_at_cursor("/")
            return
        box.add_class("shown")
        self.main.set_focus(box)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.filter_text = event.value.strip()
            if self.snap is not None:
                self._fill_table(self.snap)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.main.query_one("#tasks", TaskTable).focus()

    def action_unfilter(self) -> None:
        box = self.main.query_one("#filter", Input)
        box.value = ""
        box.remove_class("shown")
        self.filter_text = ""
        if self.snap is not None:
            self._fill_table(self.snap)
        self.main.query_one("#tasks", TaskTable).focus()

    # ------------------------------------------------------------------ actions

    def _say(self, text: str, *, error: bool = False) -> None:
        self.last_said = text
        said = self.main.query_one("#said", Static)
        said.update(Text(("error: " if error else "") + text))
        said.add_class("shown")
        self.notify(text, severity="error" if error else "information", timeout=6)

    @work(thread=True, group="control")
    def _command(self, action: str, task: str | None = None, value: float | None = None) -> None:
        what = action + (f" {task}" if task else "") + (f" {value:g}" if value is not None else "")
        self.call_from_thread(self._say, f"{what}: sent, waiting for the engine...")
        try:
            result = self.handle.command(action, task=task, value=value, source="live")
        except StrettoError as error:
            self.call_from_thread(self._say, f"{what}: {error.message}", error=True)
            return
        extra = ""
        if result.fields.get("revived"):
            extra = f" (waiting for it again: {', '.join(result.fields['revived'])})"
        if result.fields.get("skipped"):
            extra = f" (skipped with it: {', '.join(result.fields['skipped'])})"
        self.call_from_thread(self._say, f"{what}: {result.message}{extra}")

    def action_cancel_task(self) -> None:
        task = self.selected
        if task is None:
            self._say("select a task first", error=True)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._command("cancel", task=task)

        self.push_screen(
            Confirm(f"Cancel task {task}? Its agent is stopped; its dependents are skipped."),
            answered,
        )

    def action_retry_task(self) -> None:
        if self.selected is None:
            self._say("select a task first", error=True)
            return
        self._command("retry", task=self.selected)

    def action_pause(self) -> None:
        self._command("pause")

    def action_unpause(self) -> None:
        self._command("unpause")

    def action_budget(self) -> None:
        budget = self.snap.status.budget if self.snap else None

        def answered(value: float | None) -> None:
            if value is not None:
                self._command("budget", value=value)

        current = f"{budget:g}" if budget is not None else ""
        self.push_screen(Ask("New budget for the run, in USD:", current), answered)

    def action_parallel(self, step: int) -> None:
        now = self.snap.status.max_agents if self.snap else None
        if not now:
            self._say("the run's parallelism is not known yet", error=True)
            return
        if now + step < 1:
            self._say("at least one agent runs; use p to pause the run", error=True)
            return
        self._command("parallelism", value=float(now + step))

    def action_stop(self) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self._command("cancel")

        self.push_screen(
            Confirm(
                f"Stop run {self.handle.run_id}? Running agents are stopped; verified work is "
                f"kept, and `stretto resume {self.handle.run_id}` goes on with it."
            ),
            answered,
        )

    def _worktree(self) -> str | None:
        row = self._row()
        if row is None or not row.worktree:
            self._say("the selected task has no worktree (it has not started)", error=True)
            return None
        if not Path(row.worktree).is_dir():
            self._say(f"{row.worktree} is gone (its attempt was cleaned up)", error=True)
            return None
        return row.worktree

    def _row(self) -> api.TaskRow | None:
        if self.snap is None:
            return None
        return next((r for r in self.snap.rows if r.id == self.selected), None)

    def action_worktree(self) -> None:
        path = self._worktree()
        if path is not None:
            self.copy_to_clipboard(path)
            self._say(f"worktree of {self.selected}: {path} (copied)")

    def action_shell(self) -> None:
        path = self._worktree()
        if path is None:
            return
        with self.suspend():
            subprocess.run([os.environ.get("SHELL", "sh")], cwd=path, check=False)


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[: max(0, width - 3)] + "..."


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
