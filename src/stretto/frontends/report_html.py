"""``stretto report``: one self-contained HTML file that shows where a run's time and money went.

:func:`render_report` turns an :class:`stretto.api.RunReport` into a page with inline CSS, SVG
and a few lines of optional JavaScript (hover highlights one task across the views); it loads
nothing, and a Content-Security-Policy forbids it to. Every string that comes from a plan, an
agent or a log is escaped here, in one place (:func:`_e`). The page template is the package
data file ``report.html.tmpl``.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from stretto import __version__

#: Timeline geometry (SVG user units; the SVG scales to the page width).
WIDTH, LEFT, ROW, BAR = 1100, 90, 24, 16
#: Task graph geometry: at most ``PER_COLUMN`` nodes per column, edges drawn up to ``MAX_EDGES``.
NODE_W, NODE_H, COL_GAP, ROW_GAP, PER_COLUMN, MAX_EDGES = 150, 22, 50, 8, 30, 3000
#: Rows of the cost-by-task and routes tables shown before "n more".
MAX_ROWS = 200


def _e(value: Any) -> str:
    """``value`` as text, escaped for HTML text and attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def _secs(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def render_report(report: Any) -> str:
    """The whole page for ``report`` (a :class:`stretto.api.RunReport`)."""
    body = "\n".join(
        [
            _header(report),
            _summary(report),
            _timeline(report),
            _graph(report),
            _costs(report),
            _routes(report),
            _merge_train(report),
            _failures(report),
            _left(report),
        ]
    )
    template = resources.files("stretto.frontends").joinpath("report.html.tmpl").read_text()
    return Template(template).substitute(
        title=_e(f"stretto run {report.run_id} ({report.state})"),
        version=_e(__version__),
        body=body,
    )


# --------------------------------------------------------------------------- header and summary


def _header(r: Any) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(r.started))
    head = f" &middot; head <code>{_e((r.head or '')[:12])}</code>" if r.head else ""
    goal = f"<p>goal: {_e(r.goal)}</p>" if r.goal else ""
    return (
        f'<header><h1>stretto run <code>{_e(r.run_id)}</code> <span class="state {_e(r.state)}">'
        f"{_e(r.state)}</span></h1>"
        f'<div class="muted">plan {_e(r.plan)} &middot; target <code>{_e(r.target)}</code>'
        f"{head} &middot; started {_e(when)}</div>{goal}"
        '<nav><a href="#summary">summary</a><a href="#timeline">timeline</a>'
        '<a href="#graph">task graph</a><a href="#costs">costs</a><a href="#routes">routing</a>'
        '<a href="#failures">failures</a><a href="#left">what is left</a></nav></header>'
    )


def _summary(r: Any) -> str:
    counts = dict(r.counts)
    cards = [
        ("landed", counts.pop("landed", 0)),
        ("failed", counts.pop("failed", 0) + counts.pop("cancelled", 0)),
        ("skipped", counts.pop("skipped", 0)),
    ]
    cards += sorted(counts.items())
    budget = f" of ${r.budget:.2f}" if r.budget is not None else " (no budget)"
    items = [f'<div class="card {_e(k)}"><b>{v}</b>{_e(k)}</div>' for k, v in cards]
    items += [
        f'<div class="card"><b>{_secs(r.wall)}</b>wall time</div>',
        f'<div class="card"><b>{_secs(r.agent_seconds)}</b>attempt time, one by one</div>',
        f'<div class="card"><b>{_secs(r.saved_seconds)}</b>saved by running in parallel</div>',
        f'<div class="card"><b>${r.cost_usd:.4f}</b>cost{_e(budget)}</div>',
        f'<div class="card"><b>{len(r.attempts)}</b>attempts on {r.slots} slot(s)</div>',
    ]
    notes = "".join(f"<li>{_e(n)}</li>" for n in r.notes)
    return (
        f'<section id="summary"><h2>Summary</h2><div class="cards">{"".join(items)}</div>'
        + (f"<ul>{notes}</ul>" if notes else "")
        + "</section>"
    )


# --------------------------------------------------------------------------- timeline


def _tooltip(a: Any) -> str:
    arm = a.agent + (f"/{a.model}" if a.model else "") + (f" ({a.tier})" if a.tier else "")
    tokens = ", ".join(f"{k} {v}" for k, v in a.tokens.items() if v) or "none reported"
    lines = [
        f"{a.task} attempt {a.attempt}: {a.outcome}",
        f"agent {arm}" + (f" on worker {a.worker}" if a.worker else ""),
        f"tokens: {tokens}",
        f"cost: {_usd(a.cost_usd)}" + (f" (local model server {a.local})" if a.local else ""),
        f"{_secs(a.start)} .. {_secs(a.end)} ({_secs(a.end - a.start)})",
    ]
    if a.reason:
        lines.append(f"why: {a.reason}")
    for seg in a.segments:
        state = {True: "ok", False: "failed", None: "under way"}[seg.ok]
        lines.append(f"  {seg.label or seg.kind}: {_secs(seg.end - seg.start)} {state}")
    return "\n".join(lines)


def _timeline(r: Any) -> str:
    span = max(r.wall, 1e-3)
    scale = (WIDTH - LEFT - 10) / span
    rows = max(r.slots, 1)
    landing_rows = r.landing_rows
    wait_rows = _pack_waits(r.waits)
    total = rows + landing_rows + (len(set(wait_rows.values())) if r.waits else 0)
    height = 24 + total * ROW + 10
    out = [
        f'<svg class="timeline" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
        f'aria-label="attempts per agent slot over time">',
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f6e7b5"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#d4a72c" stroke-width="2"/></pattern></defs>',
        '<g class="axis">',
    ]
    for tick in _ticks(span):
        x = LEFT + tick * scale
        out.append(
            f'<line x1="{x:.1f}" y1="16" x2="{x:.1f}" y2="{height - 6}"/>'
            f'<text x="{x:.1f}" y="12" text-anchor="middle">{_secs(tick)}</text>'
        )
    out.append("</g>")
    for slot in range(rows):
        out.append(f'<text x="4" y="{24 + slot * ROW + BAR - 3}">slot {slot + 1}</text>')

    def bar(cls: str, a: Any, y: int, start: float, end: float, segments: list[Any]) -> str:
        x, w = LEFT + start * scale, max((end - start) * scale, 1.0)
        parts = [
            f'<g class="{cls}" data-task="{_e(a.task)}"><title>{_e(_tooltip(a))}</title>',
            f'<rect class="span {_e(a.outcome)}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
            f'height="{BAR}" rx="2"/>',
        ]
        for seg in segments:
            sx, sw = LEFT + seg.start * scale, max((min(seg.end, end) - seg.start) * scale, 0.8)
            ok = {True: "ok", False: "fail", None: "open"}[seg.ok]
            inset = 2 if seg.kind in ("agent", "setup", "backoff") else 4
            parts.append(
                f'<rect class="seg {_e(seg.kind)} {ok}" x="{sx:.1f}" y="{y + inset}" '
                f'width="{sw:.1f}" height="{BAR - 2 * inset}"/>'
            )
        if w > 40:
            label = a.task if w > 7 * len(a.task) else a.task[: max(1, int(w / 7) - 1)] + "…"
            parts.append(
                f'<text x="{x + 3:.1f}" y="{y + BAR - 4}" pointer-events="none">{_e(label)}</text>'
            )
        parts.append("</g>")
        return "".join(parts)

    for a in r.attempts:  # on its agent slot until verified
        out.append(bar("attempt", a, 24 + a.slot * ROW, a.start, a.slot_end, a.on_slot()))
    if landing_rows:  # then in the merge queue, its slot free for the next agent
        base = 24 + rows * ROW
        out.append(f'<text x="4" y="{base + BAR - 3}">landing</text>')
        for a in r.attempts:
            if a.landing_row is not None:
                y = base + a.landing_row * ROW
                out.append(bar("landing", a, y, a.slot_end, a.end, a.landing()))
    if r.waits:
        base = 24 + (rows + landing_rows) * ROW
        out.append(f'<text x="4" y="{base + BAR - 3}">waiting</text>')
        for index, wait in enumerate(r.waits):
            y = base + wait_rows[index] * ROW
            x, w = LEFT + wait.start * scale, max((wait.end - wait.start) * scale, 1.0)
            holders = f" (held by {', '.join(wait.holders)})" if wait.holders else ""
            tip = f"{wait.task} waits {_secs(wait.end - wait.start)}: {wait.reason}{holders}"
            out.append(
                f'<g data-task="{_e(wait.task)}"><title>{_e(tip)}</title><rect class="waitbar" '
                f'x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{BAR - 6}"/></g>'
            )
    out.append("</svg>")
    legend = (
        '<div class="legend"><span><i style="background:#cfd4dc"></i>worktree</span>'
        '<span><i style="background:#7cc493"></i>agent ok</span>'
        '<span><i style="background:#ec8b8b"></i>agent failed</span>'
        '<span><i style="background:#3a9d5d"></i>gates passed</span>'
        '<span><i style="background:#c53030"></i>gates failed</span>'
        '<span><i style="background:#1f6b3b"></i>merge</span>'
        '<span><i style="background:#f6e7b5"></i>back-off / lease wait</span>'
        "<span>outline: attempt landed (green), retried (orange), failed (red)</span></div>"
    )
    return (
        '<section id="timeline"><h2>Timeline</h2><p class="muted">Each bar is one attempt on '
        "one agent slot until it is verified; then, on the landing rows, its wait in the merge "
        "queue (its slot is free for the next agent meanwhile). Hover a bar for its task, "
        "model, tokens and cost.</p>"
        f'<div class="scroll">{"".join(out)}</div>{legend}</section>'
    )


def _ticks(span: float) -> list[float]:
    steps = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
    step = next((s for s in steps if span / s <= 10), span / 10)
    count = int(span / step) + 1
    return [i * step for i in range(count)]


def _pack_waits(waits: Sequence[Any]) -> dict[int, int]:
    """Row of each wait: the lowest row free at its start."""
    rows: list[float] = []
    out: dict[int, int] = {}
    for index, wait in sorted(enumerate(waits), key=lambda p: p[1].start):
        row = next((i for i, end in enumerate(rows) if end <= wait.start), len(rows))
        if row == len(rows):
            rows.append(0.0)
        rows[row] = wait.end
        out[index] = row
    return out


# --------------------------------------------------------------------------- task graph


def _graph(r: Any) -> str:
    columns: dict[int, list[Any]] = {}
    for node in r.tasks:
        columns.setdefault(node.wave, []).append(node)
    pos: dict[str, tuple[float, float]] = {}
    x, tallest = 10.0, 0
    for wave in sorted(columns):
        nodes = columns[wave]
        for index, node in enumerate(nodes):
            col, row = divmod(index, PER_COLUMN)
            pos[node.id] = (x + col * (NODE_W + 12), 10 + row * (NODE_H + ROW_GAP))
            tallest = max(tallest, min(len(nodes), PER_COLUMN))
        x += ((len(nodes) - 1) // PER_COLUMN + 1) * (NODE_W + 12) + COL_GAP
    width, height = max(x, 200), 20 + tallest * (NODE_H + ROW_GAP)
    critical = set(zip(r.critical_path, r.critical_path[1:], strict=False))
    total = sum(len(n.depends_on) for n in r.tasks)  # a big plan's stages: 10^5 edges
    if total <= MAX_EDGES:
        drawn = [(d, n.id) for n in r.tasks for d in n.depends_on if d in pos]
        total = len(drawn)
    else:  # only the critical path's are drawn: no need to list the rest
        drawn = [e for e in critical if e[0] in pos and e[1] in pos]
    out = [f'<svg class="graph" viewBox="0 0 {width:.0f} {height}" width="{width:.0f}" role="img">']
    splits = {(n.split_from, n.id) for n in r.tasks if n.split_from}
    for dep, task in sorted(drawn, key=lambda e: e in critical):
        (x1, y1), (x2, y2) = pos[dep], pos[task]
        kind = " critical" if (dep, task) in critical else ""
        kind += " split" if (dep, task) in splits else ""
        sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2
        mid = (sx + ex) / 2
        out.append(
            f'<path class="edge{kind}" d="M{sx:.0f},{sy:.0f} C{mid:.0f},{sy:.0f} '
            f'{mid:.0f},{ey:.0f} {ex:.0f},{ey:.0f}"/>'
        )
    for node in r.tasks:
        nx, ny = pos[node.id]
        crit = " critical" if node.critical else ""
        tip = f"{node.id}: {node.title}\nstage {node.stage}; {node.state}; attempts {node.attempts}"
        if node.reason:
            tip += f"\n{node.reason}"
        if node.depends_on:
            tip += f"\nwaits for: {', '.join(node.depends_on[:20])}"
        label = node.id if len(node.id) <= 21 else node.id[:20] + "…"
        out.append(
            f'<g class="node {_e(node.state)}{crit}" data-task="{_e(node.id)}">'
            f"<title>{_e(tip)}</title>"
            f'<rect x="{nx:.0f}" y="{ny:.0f}" width="{NODE_W}" height="{NODE_H}" rx="4"/>'
            f'<text x="{nx + 6:.0f}" y="{ny + 15:.0f}">{_e(label)}</text></g>'
        )
    out.append("</svg>")
    hidden = total - len(drawn)
    note = f" {hidden} dependency edges are not drawn (too many)." if hidden else ""
    path = " &rarr; ".join(_e(t) for t in r.critical_path) or "(no task landed)"
    rows = "".join(
        f'<tr data-task="{_e(n.id)}"><td><code>{_e(n.id)}</code></td><td>{_e(n.title)}</td>'
        f'<td>{_e(n.stage)}</td><td><span class="state {_e(n.state)}">{_e(n.state)}</span></td>'
        f'<td class="num">{n.attempts}</td><td>{_e(", ".join(n.depends_on[:10]))}'
        f"{' …' if len(n.depends_on) > 10 else ''}</td></tr>"
        for n in r.tasks
    )
    return (
        '<section id="graph"><h2>Task graph</h2><p class="muted">Columns are waves of '
        "dependencies; colour is the task's outcome; the purple chain is the critical path "
        f"(the dependencies that ended last): {path}.{note}</p>"
        f'<div class="scroll">{"".join(out)}</div>'
        f"<details><summary>{len(r.tasks)} tasks by stage ({_e(', '.join(r.stages))})</summary>"
        "<table><tr><th>task</th><th>title</th><th>stage</th><th>state</th>"
        f'<th class="num">attempts</th><th>waits for</th></tr>{rows}</table></details></section>'
    )


# --------------------------------------------------------------------------- costs and routes


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], *, numeric: int = 0) -> str:
    cols = list(head)
    first = len(cols) - numeric
    num = ' class="num"'
    th = "".join(f"<th{num if i >= first else ''}>{_e(c)}</th>" for i, c in enumerate(cols))
    body = "".join(
        "<tr>"
        + "".join(f"<td{num if i >= first else ''}>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _costs(r: Any) -> str:
    out = ['<section id="costs"><h2>Cost</h2>']
    for by in ("model", "agent", "task"):
        rows = r.cost_by.get(by, [])
        shown = rows[:MAX_ROWS]
        out.append(f"<h3>by {by}</h3>")
        out.append(
            _table(
                [by, "attempts", "tokens", "cost", "unpriced"],
                (
                    [
                        f"<code>{_e(row['key'])}</code>",
                        str(row["attempts"]),
                        f"{row['tokens']:,}",
                        f"${row['cost_usd']:.4f}"
                        + (f" ({row['local']} local)" if row.get("local") else ""),
                        str(row["unpriced"]),
                    ]
                    for row in shown
                ),
                numeric=4,
            )
        )
        if len(rows) > len(shown):
            out.append(f'<p class="muted">and {len(rows) - len(shown)} more</p>')
    out.append("</section>")
    return "".join(out)


def _routes(r: Any) -> str:
    escalations = [x for x in r.routes if x["escalation"]]
    shown = r.routes[:MAX_ROWS]
    rows = (
        [
            f"<code>{_e(x['task'])}</code>",
            _e(x["attempt"]),
            _e(x["agent"]),
            _e(x["model"] or ""),
            _e(x["tier"] or ""),
            _e(x["rule"]) + (" <b>(escalation)</b>" if x["escalation"] else ""),
            _e(x["reason"]),
        ]
        for x in shown
    )
    table = _table(["task", "attempt", "agent", "model", "tier", "rule", "why"], rows)
    hidden = len(r.routes) - len(shown)
    more = f'<p class="muted">and {hidden} more</p>' if hidden else ""
    return (
        f'<section id="routes"><h2>Routing</h2><p>{len(r.routes)} attempt(s) routed, '
        f"{len(escalations)} escalation(s) to a stronger arm. <code>stretto explain TASK</code> "
        f"shows every estimate.</p><details><summary>the router's choices</summary>{table}{more}"
        "</details></section>"
    )


def _merge_train(r: Any) -> str:
    train = getattr(r, "merge_train", None)
    if not train:
        return ""
    rows = (
        [
            _e(", ".join(str(c) for c in x["cars"])),
            _e(", ".join(x["tasks"])),
            f"<code>{_e(str(x['new'])[:12])}</code>",
        ]
        for x in train["landings"]
    )
    table = _table(["cars", "tasks landed", "target moved to"], rows)
    flaky = ", ".join(f"{f['gate']} on {str(f['tree'])[:12]}" for f in train["flaky"]) or "none"
    back = ", ".join(train["sent_back"]) or "none"
    return (
        f'<section id="train"><h2>Merge train</h2><p>{train["cars"]} car(s), '
        f"{train['gate_runs']} gate run(s) on merged trees, {train['cached']} gate result(s) "
        f"answered from the (tree, gate) cache, {len(train['landings'])} landing(s). Flaky "
        f"gates: {_e(flaky)}. Sent back: {_e(back)}.</p>{table}</section>"
    )


# --------------------------------------------------------------------------- failures, leftovers


def _failures(r: Any) -> str:
    if not r.failures:
        return '<section id="failures"><h2>Failures</h2><p>None: no task failed.</p></section>'
    count = len(r.failures)
    out = [f'<section id="failures"><h2>Failures</h2><p>{count} task(s) did not land.</p>']
    for f in r.failures[:MAX_ROWS]:
        gates = "".join(
            f"<tr><td>{_e(g.get('stage'))}</td><td>{_e(g.get('gate'))}</td>"
            f'<td class="{"pass" if g.get("passed") else "fail"}">'
            f"{'passed' if g.get('passed') else 'FAILED'}</td><td>{_e(g.get('summary'))}</td></tr>"
            for g in f.gates
        )
        table = (
            "<table><tr><th>stage</th><th>gate</th><th>verdict</th><th>summary</th></tr>"
            f"{gates}</table>"
            if gates
            else ""
        )
        tail = f"<pre>{_e(f.log_tail)}</pre>" if f.log_tail else ""
        opened = " open" if f.state == "failed" else ""
        out.append(
            f'<details{opened} data-task="{_e(f.task)}"><summary><code>{_e(f.task)}</code> '
            f'<span class="state {_e(f.state)}">{_e(f.state)}</span> after {f.attempts} '
            f"attempt(s)</summary><p>{_e(f.reason)}</p>{table}{tail}</details>"
        )
    if len(r.failures) > MAX_ROWS:
        out.append(f'<p class="muted">and {len(r.failures) - MAX_ROWS} more</p>')
    out.append("</section>")
    return "".join(out)


def _left(r: Any) -> str:
    if not r.left:
        body = "<p>Nothing: every task landed.</p>"
    else:
        names = ", ".join(f"<code>{_e(t)}</code>" for t in r.left[:MAX_ROWS])
        more = f" and {len(r.left) - MAX_ROWS} more" if len(r.left) > MAX_ROWS else ""
        body = f"<p>{len(r.left)} task(s) did not land: {names}{more}.</p>"
    return (
        f'<section id="left"><h2>What is left</h2>{body}<p>Next: {_e(r.next_step)}</p>'
        f"<p class=muted><code>stretto status {_e(r.run_id)}</code> shows the run now; "
        f"<code>stretto log TASK --run {_e(r.run_id)}</code> a task's logs.</p></section>"
    )


def write_report(report: Any, path: Path) -> Path:
    """Write the page for ``report`` to ``path`` (0600, replaced whole: a reader never sees
    half a page); return the path."""
    text = render_report(report).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text)
        os.chmod(partial, 0o600)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path
