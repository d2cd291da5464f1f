"""Write the session state diagrams from the transition tables.

The diagrams in the documentation are generated, never drawn by hand, so
they cannot disagree with ``smtp_message._state`` (as h11 does it).
Run by ``nox -s docs`` before Sphinx.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from smtp_message import _state

OUT = Path(__file__).parent / "_generated"


def mermaid(rows: tuple[tuple[object, str, str, object], ...], start: str) -> str:
    """A mermaid state diagram of ``rows``, merging parallel edges."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for state, trigger, outcome, target in rows:
        src = getattr(state, "name", str(state))
        dst = getattr(target, "name", str(target))
        label = trigger if outcome == "*" else f"{trigger} {outcome}xx"
        if label not in edges[(src, dst)]:
            edges[(src, dst)].append(label)
    lines = ["```{mermaid}", "stateDiagram-v2", f"    [*] --> {start}"]
    for (src, dst), labels in edges.items():
        text = ", ".join(labels).replace(":", "")
        lines.append(f"    {src} --> {dst}: {text}")
    lines.append("```")
    return "\n".join(lines) + "\n"


def table(rows: tuple[tuple[object, str, str, object], ...]) -> str:
    """The same rows as a Markdown table."""
    out = ["| State | Trigger | Reply | Next state |", "|---|---|---|---|"]
    for state, trigger, outcome, target in rows:
        reply = "any" if outcome == "*" else f"{outcome}xx"
        src = getattr(state, "name", str(state))
        dst = getattr(target, "name", str(target))
        out.append(f"| {src} | {trigger} | {reply} | {dst} |")
    return "\n".join(out) + "\n"


def main() -> None:
    """Write one diagram and one table per side."""
    OUT.mkdir(exist_ok=True)
    for side, rows in (
        ("server", _state.SERVER_TRANSITIONS),
        ("client", _state.CLIENT_TRANSITIONS),
    ):
        (OUT / f"{side}-states.md").write_text(mermaid(rows, "GREETING"))
        (OUT / f"{side}-transitions.md").write_text(table(rows))


if __name__ == "__main__":
    main()
