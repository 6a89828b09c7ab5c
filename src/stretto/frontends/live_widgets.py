"""Pieces of ``stretto live`` that are not the app itself: the header's words, the table's
cells, the timeline drawing, and the two small dialogs (confirm, ask for a number).

Plain functions of :class:`~stretto.api.LiveSnapshot` values, so they read the same in a test
as on screen. Nothing here relies on colour alone: states are words and marks (``NO_COLOR``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.segment import Segment
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.reactive import Reactive
from textual.screen import ModalScreen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Input, Label, Log

from stretto.frontends.view import train_line

if TYPE_CHECKING:
    from stretto.api import LiveSnapshot, TaskRow

#: A mark per row group (needs you, running, waiting, done, landed).
MARKS = ("!!", ">", ".", "-", "ok")
COLUMNS = ("", "state", "task", "agent", "try", "time", "tokens", "cost", "detail")


def duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h04m``; "" for None."""
    if seconds is None:
        return ""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def tokens(count: int | None) -> str:
    """``950``, ``12.3k``, ``4.1M``; "" for None."""
    if count is None:
        return ""
    if count < 1000:
        return str(count)
    if count < 1_000_000:
        return f"{count / 1000:.1f}k"
    return f"{count / 1_000_000:.1f}M"


def cells(row: TaskRow, room: int = 160) -> tuple[str, ...]:
    """The table's cells for one row, in :data:`COLUMNS` order (the detail cut to ``room``)."""
    agent = row.agent or ""
    if row.model:
        agent = f"{agent}/{row.model}"
    detail = row.attention or row.detail
    return (
        MARKS[row.group],
        row.state,
        row.id,
        agent,
        str(row.attempts) if row.attempts else "",
        duration(row.elapsed),
        tokens(row.tokens),
        f"${row.cost_usd:.2f}" if row.cost_usd else "",
        _cut(detail.replace("\n", " "), room),
    )


def _cut(text: str, room: int) -> str:
    return text if len(text) <= room else text[: max(0, room - 3)] + "..."


def header_lines(snap: LiveSnapshot) -> list[str]:
    """The header: run and state, progress, spend against budget, wall time and what is left,
    agents; then providers backing off or out of credit."""
    s = snap.status
    c = snap.counts
    state = s.state + ("" if s.live or s.over else " (no engine: `stretto resume`)")
    first = (
        f"run {s.run_id}: {c['landed']}/{c['total']} landed · {c['failed']} failed · "
        f"{c['running']} running · {c['waiting']} waiting"
    )
    spend = f"${s.cost_usd:.2f}" + (f" of ${s.budget:.2f}" if s.budget is not None else "")
    second = f"{state}  spend {spend}  wall {duration(snap.wall)}"
    if snap.left is not None:
        second += f"  left ~{duration(snap.left)}"
    if s.max_agents and not s.over:
        second += f"  agents {s.max_agents}"
    lines = [first, second]
    if s.goal and not s.tasks:
        lines.append(f"planning the goal (one model call): {s.goal}")
    if snap.providers:
        lines.append("; ".join(f"{p} {said}" for p, said in sorted(snap.providers.items())))
    train = train_line(s)
    if train:
        lines.append(train)
    return lines


def timeline_lines(bars: list[Any], width: int, now: float) -> list[str]:
    """Attempts per agent slot over time: one line per slot, each attempt drawn as its task id
    and attempt over the span it ran (``=`` still running, ``x`` failed at its end)."""
    if not bars:
        return ["no attempt has started yet"]
    width = max(20, width - 8)
    start = min(b.start for b in bars)
    end = max((b.end if b.end is not None else now) for b in bars)
    span = max(end - start, 1e-6)
    slots = max(b.slot for b in bars) + 1
    grid = [[" "] * width for _ in range(slots)]
    for bar in bars:
        left = int((bar.start - start) / span * (width - 1))
        right = int(((bar.end if bar.end is not None else now) - start) / span * (width - 1))
        right = max(right, left)
        fill = "=" if bar.end is None else "-"
        label = f"{bar.task}#{bar.attempt}"
        cells_ = list((label + fill * width)[: right - left + 1])
        if bar.outcome not in ("success", "running"):
            cells_[-1] = "x"
        if len(cells_) > 1:
            cells_[0] = "[" if len(label) >= len(cells_) else cells_[0]
        grid[bar.slot][left : right + 1] = cells_
    lines = [f"slot {i + 1:>2} " + "".join(row).rstrip() for i, row in enumerate(grid)]
    lines.append(f"{'':8}0s{'':>{max(1, width - 12)}}{duration(span):>6}")
    lines.append("x: attempt failed   =: still running")
    return lines


class Confirm(ModalScreen[bool]):
    """Ask yes or no; ``y`` confirms, ``n`` or escape declines."""

    BINDINGS = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]
    DEFAULT_CSS = """
    Confirm { align: center middle; }
    Confirm > Vertical { width: 60; height: auto; border: thick $warning; padding: 1 2;
                         background: $surface; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            yield Label("y: yes   n / escape: no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class Ask(ModalScreen[float | None]):
    """Ask for a number (enter submits, escape cancels); a wrong one is said, not sent."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = """
    Ask { align: center middle; }
    Ask > Vertical { width: 60; height: auto; border: thick $accent; padding: 1 2;
                     background: $surface; }
    Ask #problem { color: $error; }
    """

    def __init__(self, question: str, value: str = "", *, minimum: float = 0) -> None:
        super().__init__()
        self.question = question
        self.value = value
        self.minimum = minimum

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            yield Input(self.value, id="number")
            yield Label("", id="problem")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        try:
            number = float(text)
        except ValueError:
            number = float("nan")
        if not number >= self.minimum or number == float("inf"):
            self.query_one("#problem", Label).update(
                f"{text!r} is not a number of {self.minimum:g} or more"
            )
            return
        self.dismiss(number)

    def action_cancel(self) -> None:
        self.dismiss(None)


#: The keys line at the bottom (wraps onto a second line in a narrow terminal).
KEYS = (
    "q detach  / filter  c cancel task  r retry  p pause  u unpause  b budget  "
    "+/- agents  s stop run  w copy worktree path  o shell there  tab: next pane"
)


class TaskTable(ScrollView, can_focus=True):
    """The task table: a header line and one line per row, drawn line by line.

    Textual's DataTable renders every visible row again when any cell changes; with agents
    writing all the time that is most of the UI's CPU. Here each line is cached by its content,
    and a changed row repaints only its own line. Up/down/page keys, home/end and a mouse click
    move the cursor; :class:`TaskTable.Highlighted` says which row it is on.
    """

    BINDINGS = [
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
        Binding("pageup", "page(-1)", show=False),
        Binding("pagedown", "page(1)", show=False),
        Binding("home", "jump(0)", show=False),
        Binding("end", "jump(-1)", show=False),
    ]
    COMPONENT_CLASSES = {"task-table--header", "task-table--cursor"}
    DEFAULT_CSS = """
    TaskTable { background: $surface; }
    TaskTable > .task-table--header { text-style: bold; background: $panel; }
    TaskTable > .task-table--cursor { background: $block-cursor-background;
                                      color: $block-cursor-foreground; text-style: bold; }
    """

    class Highlighted(Message):
        """The cursor is on the row ``key``."""

        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    def __init__(self, columns: tuple[str, ...], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns = columns
        self.rows: list[tuple[str, tuple[str, ...]]] = []
        self.cursor = 0
        self.widths = [len(c) for c in columns]
        self._lines: dict[tuple[Any, ...], Strip] = {}

    def set_rows(self, rows: list[tuple[str, tuple[str, ...]]]) -> None:
        """Show ``rows`` (key, cells); the cursor stays on its row's key if it is still there."""
        was = self.rows[self.cursor][0] if self.cursor < len(self.rows) else None
        old = self.rows
        self.rows = rows
        widths = [
            max([len(name), *(len(cells_[i]) for _, cells_ in rows)])
            for i, name in enumerate(self.columns)
        ]
        keys = [key for key, _ in rows]
        self.cursor = keys.index(was) if was in keys else min(self.cursor, max(0, len(rows) - 1))
        self.virtual_size = Size(sum(widths) + 2 * len(widths), len(rows) + 1)
        if widths != self.widths or len(old) != len(rows):
            self.widths = widths
            self._lines.clear()
            self.refresh()
        else:
            for i, row in enumerate(rows):
                if old[i] != row:
                    self.refresh_line(i + 1)
            if was in keys and old[keys.index(was)][0] != was:
                self.refresh()
        if rows and rows[self.cursor][0] != was:
            self.post_message(self.Highlighted(rows[self.cursor][0]))

    def _text(self, cells_: tuple[str, ...]) -> str:
        return " " + "  ".join(c.ljust(w) for c, w in zip(cells_, self.widths, strict=True))

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        if y == 0:
            key: tuple[Any, ...] = ("header", tuple(self.widths), scroll_x, width)
            text = self._text(self.columns)
            style = self.get_component_rich_style("task-table--header")
        else:
            index = scroll_y + y - 1
            if index >= len(self.rows):
                return Strip.blank(width, self.rich_style)
            on = index == self.cursor
            row = self.rows[index]
            key = (row, on, tuple(self.widths), scroll_x, width)
            text = self._text(row[1])
            style = self.get_component_rich_style("task-table--cursor") if on else self.rich_style
        cached = self._lines.get(key)
        if cached is None:
            if len(self._lines) > 4000:
                self._lines.clear()
            strip = Strip([Segment(text, style)]).crop_extend(scroll_x, scroll_x + width, style)
            cached = self._lines[key] = strip
        return cached

    def _move_to(self, index: int) -> None:
        if not self.rows:
            return
        index = max(0, min(index, len(self.rows) - 1))
        if index == self.cursor:
            return
        self.cursor = index
        visible = max(1, self.size.height - 1)
        scroll_y = self.scroll_offset.y
        if index < scroll_y:
            self.scroll_to(y=index, animate=False)
        elif index >= scroll_y + visible:
            self.scroll_to(y=index - visible + 1, animate=False)
        self.refresh()
        self.post_message(self.Highlighted(self.rows[index][0]))

    def action_move(self, step: int) -> None:
        self._move_to(self.cursor + step)

    def action_page(self, step: int) -> None:
        self._move_to(self.cursor + step * max(1, self.size.height - 2))

    def action_jump(self, where: int) -> None:
        self._move_to(len(self.rows) - 1 if where < 0 else where)

    def on_click(self, event: Click) -> None:
        if event.y >= 1:
            self._move_to(self.scroll_offset.y + event.y - 1)


class FollowLog(Log):
    """A :class:`~textual.widgets.Log` that grows without laying the screen out again.

    Textual's ``virtual_size`` asks for a layout of the whole screen whenever it changes, so a
    log gaining a line every quarter of a second (an agent's output) made the screen lay out
    and repaint everything four times a second, most of the UI's time and the long tail of its
    record-to-screen latency. The log's own height is set by the layout, not by its content:
    a new line needs only the log's scrollbars updated and the log repainted.
    """

    virtual_size: Reactive[Size] = Reactive(Size(0, 0))

    def watch_virtual_size(self, size: Size) -> None:
        if self.is_mounted:
            self._scroll_update(size)  # a scrollbar appearing still lays the screen out
        self.refresh()


class Lines(Widget):
    """A few lines of text whose height is their count: new words repaint it, and only a new
    number of lines lays the screen out again (Static lays it out on every update)."""

    DEFAULT_CSS = "Lines { height: 1; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.text = Text()

    def show(self, lines: list[str]) -> None:
        self.text = Text("\n".join(lines))
        if self.styles.height is None or self.styles.height.value != len(lines):
            self.styles.height = len(lines)
        self.refresh()

    def render(self) -> Text:
        return self.text
