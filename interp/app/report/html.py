"""The one HTML shell every report page shares, and the safe ways data reaches a page.

A page is its title, the scripts it loads in <head> (report.js first; on the pages that plot, report.js
loads Plotly once the page's text has been painted, and draws the charts when it arrives), data
inline as JSON script elements (`<script id="report-NAME" type="application/json">`, read with
`monoReport.readJSON("report-NAME")`), and its own script `NAME.js` at the end of <body>.

Text from the corpus is untrusted: every page builds its DOM with textContent, and JSON placed in a
<script> has `<`, `>`, `&`, U+2028 and U+2029 written as \\u escapes, so no string can close the
script element or open a comment.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from sae.files import write_text

ASSETS = Path(__file__).parent / "assets"
# Plotly's cartesian build (plotly.js-cartesian-dist-min, MIT; its licence beside it in assets/vendor/):
# bar, histogram, scatter and heatmap, every chart the pages draw, in a third of the full build's size
PLOTLY = "plotly-cartesian.min.js"


def script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element and inside a .js file."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


def render_page(
    name: str, title: str, *, scripts: tuple[str, ...] = (), data: dict[str, Any] | None = None, plots: bool = False
) -> str:
    """The HTML of page `name` (its script is `name`.js): `scripts` load in <head> after report.js
    (and Plotly, after the text is painted, with `plots`), `data` inline as JSON elements with ids `report-<key>`."""
    inline = "".join(
        f'<script id="report-{key}" type="application/json">{script_json(value)}</script>\n'
        for key, value in (data or {}).items()
    )
    loaded = "".join(f'<script src="{html.escape(src)}"></script>\n' for src in ("report.js", *scripts))
    body = f'<body data-plotly="{PLOTLY}">' if plots else "<body>"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n"
        '<link rel="icon" href="data:,">\n<link rel="stylesheet" href="report.css">\n'
        f'{inline}{loaded}</head>\n{body}\n<div id="app"></div>\n'
        f'<script src="{html.escape(name)}.js"></script>\n</body>\n</html>\n'
    )


def write_page(out: Path, name: str, title: str, **page: Any) -> Path:
    """`render_page` written atomically to out/`name`.html."""
    return write_text(out / f"{name}.html", render_page(name, title, **page))
