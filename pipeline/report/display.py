"""Show charts and tables in a chapter, the same way in Quarto and in the offline fallback.

`chart(c)` displays a mime bundle with `text/html` (an interactive Vega-Lite chart; the Vega
JavaScript is inlined once per kernel, so the HTML opens offline) and `image/png` (vl-convert at
216 ppi: 3 pixels per CSS pixel, sharp in print, 1 pt per CSS pixel on paper). Quarto, like the
fallback, prefers `text/html` for HTML and reveal.js outputs and `image/png` for Typst/PDF.
`table(df)` prints a Markdown pipe table, for cells with `#| output: asis` (and a `tbl-cap`).
"""

from __future__ import annotations

import base64
import functools
import json
import re
import uuid
from typing import Any

import pandas as pd

PNG_PPI = 216  # 3 pixels per CSS pixel, and a print size where 1 CSS pixel = 1 pt


BUNDLE_ATTR = "data-vega-bundle"  # marks the inlined library so the fallback can place it once


_NUMERIC = re.compile(r"^[−+\-]?\d|^n\.d\.$")


_state = {"bundle_emitted": False}


def _spec(chart: Any) -> dict:
    return chart.to_dict() if hasattr(chart, "to_dict") else dict(chart)


@functools.cache
def bundle_script() -> str:
    """Vega, Vega-Lite and Vega-Embed as one inline module script (no CDN: works offline)."""
    import vl_convert as vlc

    js = vlc.javascript_bundle("window.vegaEmbed = vegaEmbed;")
    return f'<script type="module" {BUNDLE_ATTR}="1">{js}</script>'


def chart_bundle(chart: Any, include_library: bool | None = None) -> dict[str, str]:
    """The mime bundle of an Altair chart: interactive HTML and a static PNG.

    The library goes with the first chart shown by this kernel (`include_library=None`).
    """
    import vl_convert as vlc

    if include_library is None:
        include_library = not _state["bundle_emitted"]
        _state["bundle_emitted"] = True
    spec = _spec(chart)
    div = f"vega-{uuid.uuid4().hex[:12]}"
    # Module scripts run in document order, after the library's own module script.
    html = (f'{bundle_script() if include_library else ""}<div id="{div}" class="vega-chart"></div>\n'
            f'<script type="module">window.vegaEmbed("#{div}", {json.dumps(spec)}, '
            '{"actions": false, "renderer": "svg"});</script>')
    png = vlc.vegalite_to_png(spec, ppi=PNG_PPI)
    return {"text/html": html, "image/png": base64.b64encode(png).decode("ascii")}


def chart(c: Any) -> None:
    """Display an Altair chart (interactive in HTML, static image in the PDF)."""
    from IPython.display import display

    display(chart_bundle(c), raw=True)


def _cell(value: Any, digits: int | None, decimal: str) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if digits is not None and isinstance(value, float):
        value = f"{value:.{digits}f}".replace(".", decimal).replace("-", "−")
    return str(value).replace("|", "\\|").replace("\n", " ")


WRAP_AT = 40  # characters: a cell longer than this wraps, so its length no longer sets the column width


def markdown_table(df: pd.DataFrame, index: bool = False, digits: int | None = None,
                   decimal: str = ",") -> str:
    """A pipe table (hand-written: pandas' to_markdown needs the extra `tabulate` package).

    Floats are written with `digits` decimals and the `decimal` separator when `digits` is given,
    as they are otherwise. Numeric columns are right-aligned.
    """
    frame = df.reset_index() if index else df
    cells = [[_cell(v, digits, decimal) for v in row] for row in frame.itertuples(index=False)]
    names = [_cell(c, None, decimal) for c in frame.columns]
    # pandoc sizes the columns of a wide pipe table by the dashes of this line: follow the content, but
    # a long paragraph or formula wraps anyway (capped), and no column is narrower than its longest word.
    widths = [max(min(max([len(n) // 2, *(len(r[i]) for r in cells)], default=3), WRAP_AT),
                  max((len(w) for r in cells for w in r[i].split()), default=3))
              for i, n in enumerate(names)]
    numeric = [i > 0 and all(_NUMERIC.match(r[i]) for r in cells if r[i] not in ("", "—"))
               for i in range(len(names))]
    align = "|" + "|".join(("-" * max(3, w) + ":") if num else (":" + "-" * max(3, w))
                           for w, num in zip(widths, numeric, strict=True)) + "|"
    rows = ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(["| " + " | ".join(names) + " |", align, *rows])


def table(df: pd.DataFrame, index: bool = False, digits: int | None = None, decimal: str = ",") -> None:
    """Print a table as Markdown (use in a cell with `#| output: asis`; add `tbl-cap` for a caption)."""
    print("\n" + markdown_table(df, index=index, digits=digits, decimal=decimal) + "\n")
