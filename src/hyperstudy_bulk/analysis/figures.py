"""The report's figures as PNG bytes, drawn with matplotlib's object API (`Figure` objects,
never pyplot): no display, no backend to select, no global figure registry to leak into.

Each function takes plain counts and returns one PNG.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import datetime

from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

DPI = 96


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def records_per_type(counts: Mapping[str, int], complete: Mapping[str, bool]) -> bytes:
    names = list(complete)
    figure = Figure(figsize=(9, 0.35 * len(names) + 1))
    axes = figure.subplots()
    colours = ["#4c72b0" if complete[n] else "#c44e52" for n in names]
    axes.barh(names, [max(counts.get(n, 0), 0) for n in names], color=colours)
    axes.invert_yaxis()
    axes.set_xlabel("records")
    if any(counts.get(n, 0) > 0 for n in names):
        axes.set_xscale("log")
    return _png(figure)


def timelines(series: Mapping[str, Mapping[str, Mapping[str, int]]]) -> bytes:
    """series: room -> data type -> minute ('YYYY-MM-DDTHH:MM') -> records. One panel a room,
    minutes counted from the room's first record."""
    rooms = list(series) or ["(no timed records)"]
    figure = Figure(figsize=(10, 1.6 * len(rooms) + 0.6))
    panels = figure.subplots(len(rooms), 1, squeeze=False)
    names = list(dict.fromkeys(name for per_type in series.values() for name in per_type))
    colour = {name: f"C{i % 10}" for i, name in enumerate(names)}
    for panel, room in zip(panels[:, 0], rooms, strict=True):
        per_type = series.get(room, {})
        minutes = [m for counts in per_type.values() for m in counts]
        start = min(map(_minute, minutes)) if minutes else None
        for name, counts in per_type.items():
            points = sorted(counts.items())
            assert start is not None
            xs = [(_minute(m) - start).total_seconds() / 60 for m, _ in points]
            ys = [n for _, n in points]
            panel.plot(xs, ys, marker=".", linewidth=1, label=name, color=colour[name])
        panel.set_title(room, fontsize=9, loc="left")
        panel.set_ylabel("per minute", fontsize=8)
        panel.tick_params(labelsize=8)
    panels[-1, 0].set_xlabel("minutes since the room's first record")
    figure.tight_layout()
    if names:
        handles = [Line2D([], [], color=colour[n], marker=".", label=n) for n in names]
        figure.legend(
            handles=handles, fontsize=8, ncol=6, loc="lower center", bbox_to_anchor=(0.5, 1)
        )
    return _png(figure)


def _minute(text: str) -> datetime:
    return datetime.fromisoformat(text)


def grid(labels: Sequence[str], types: Sequence[str], counts: Sequence[Sequence[int]]) -> bytes:
    """A heatmap of records per participant (rows) and data type (columns); zeros crossed."""
    rows = max(len(labels), 1)
    figure = Figure(figsize=(1.0 * len(types) + 4, 0.22 * rows + 1.5))
    axes = figure.subplots()
    values = [[n if n > 0 else float("nan") for n in row] for row in counts] or [[float("nan")]]
    positive = [n for row in counts for n in row if n > 0]
    norm = LogNorm(vmin=min(positive), vmax=max(positive)) if positive else None
    image = axes.imshow(values, aspect="auto", cmap="viridis", norm=norm, interpolation="none")
    for r, row in enumerate(counts):
        for c, n in enumerate(row):
            if n == 0:
                axes.text(c, r, "0", ha="center", va="center", color="#c44e52", fontsize=8)
    axes.set_xticks(range(len(types)), types, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(len(labels)), labels, fontsize=7)
    if positive:
        figure.colorbar(image, ax=axes, label="records")
    return _png(figure)


def media(bytes_per_room: Mapping[str, int]) -> bytes:
    rooms = list(bytes_per_room) or ["(no media)"]
    figure = Figure(figsize=(9, 0.3 * len(rooms) + 1))
    axes = figure.subplots()
    axes.barh(rooms, [bytes_per_room.get(r, 0) / 1e6 for r in rooms], color="#55a868")
    axes.invert_yaxis()
    axes.set_xlabel("MB of media files")
    axes.tick_params(labelsize=8)
    return _png(figure)
