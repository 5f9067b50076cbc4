"""Show charts and tables in a chapter, the same way in Quarto and in the offline fallback.

`chart(c)` displays a mime bundle with `text/html` (an interactive Vega-Lite chart whose JavaScript
is inlined once per document, so the HTML works offline) and `image/png` (rendered by vl-convert at
3x, sharp in print): HTML outputs pick the first, PDF outputs the second.
`table(df)` prints a Markdown pipe table, for cells with `#| output: asis` and a `tbl-cap`.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any

import pandas as pd

_BUNDLE_EMITTED = False
_NUMERIC = re.compile(r"^[−+\-]?\d|^n\.d\.$")
PNG_SCALE = 3


def _spec(chart: Any) -> dict:
    return chart.to_dict() if hasattr(chart, "to_dict") else dict(chart)


def _bundle_script() -> str:
    """Vega, Vega-Lite and Vega-Embed, inlined once (no CDN: the report must open offline)."""
    import vl_convert as vlc

    global _BUNDLE_EMITTED
    if _BUNDLE_EMITTED:
        return ""
    _BUNDLE_EMITTED = True
    return f'<script type="module">{vlc.javascript_bundle("window.vegaEmbed = vegaEmbed;")}</script>\n'


def chart_bundle(chart: Any) -> dict[str, str]:
    """The mime bundle of an Altair chart: interactive HTML and a static PNG."""
    import vl_convert as vlc

    spec = _spec(chart)
    div = f"vega-{uuid.uuid4().hex[:12]}"
    html = (f'{_bundle_script()}<div id="{div}" class="vega-chart"></div>\n'
            f'<script type="module">window.vegaEmbed("#{div}", {json.dumps(spec)}, '
            '{"actions": false, "renderer": "svg"});</script>')
    png = vlc.vegalite_to_png(spec, scale=PNG_SCALE)
    return {"text/html": html, "image/png": base64.b64encode(png).decode("ascii")}


def chart(c: Any) -> None:
    """Display an Altair chart (interactive in HTML, static image in the PDF)."""
    from IPython.display import display

    display(chart_bundle(c), raw=True)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, index: bool = False) -> str:
    """A pipe table (hand-written: pandas' to_markdown needs the extra `tabulate` package)."""
    frame = df.reset_index() if index else df
    cells = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    header = "| " + " | ".join(_cell(c) for c in frame.columns) + " |"
    # pandoc sizes the columns of a wide pipe table by the dashes of this line: follow the content.
    widths = [max([len(_cell(c)) // 2, *(len(r[i]) for r in cells)], default=3) for i, c in enumerate(frame.columns)]
    numeric = [all(_NUMERIC.match(r[i]) for r in cells if r[i] not in ("", "—")) and i > 0
               for i in range(len(frame.columns))]
    align = "|" + "|".join(("-" * max(3, w) + ":") if num else (":" + "-" * max(3, w))
                           for w, num in zip(widths, numeric, strict=True)) + "|"
    rows = ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join([header, align, *rows])


def table(df: pd.DataFrame, index: bool = False) -> None:
    """Print a table as Markdown (use in a cell with `#| output: asis`)."""
    print("\n" + markdown_table(df, index) + "\n")
