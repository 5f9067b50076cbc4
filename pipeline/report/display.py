"""Show charts and tables in a chapter, the same way in Quarto and in the offline fallback.

`chart(c)` displays a mime bundle with `text/html` (an interactive Vega-Lite chart; the Vega
JavaScript is inlined once per kernel, so the HTML opens offline) and `image/png` (vl-convert at
216 ppi: 3 pixels per CSS pixel, sharp in print, 1 pt per CSS pixel on paper). Quarto, like the
fallback, prefers `text/html` for HTML and reveal.js outputs and `image/png` for Typst/PDF.
`table(df)` prints a Markdown pipe table, for cells with `#| output: asis` (and a `tbl-cap`).

Inline expressions: Quarto shows a value's `text/markdown` form as Markdown, but a plain `str` through
its repr, Markdown escaped (`\\xa0` and literal `**`). Importing this module in a kernel gives every
`str` a `text/markdown` form (`markdown_strings`), so `{python} f(ctx)` returning French Markdown
reads as written, in Quarto and in the fallback (which picks the same form).
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.cache import atomic_path, atomic_write_text, cache_dir, combined_digest
from pipeline.report.french import NBSP

PNG_PPI = 216  # 3 pixels per CSS pixel, and a print size where 1 CSS pixel = 1 pt


QUARTO_NO_TABLE = "<!--| quarto-html-table-processing: none -->\n"  # Quarto's switch for library authors


BUNDLE_ATTR = "data-vega-bundle"  # marks the inlined library so the fallback can place it once


_NUMERIC = re.compile(r"^[−+\-]?\d|^n\.d\.$")


_state = {"bundle_emitted": False}


def markdown_strings() -> bool:
    """In an IPython kernel, show `str` values as Markdown (inline expressions); False outside one."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    shell.display_formatter.formatters["text/markdown"].for_type(str, lambda text: text)
    return True


markdown_strings()


def _spec(chart: Any) -> tuple[dict, Path]:
    """The chart's Vega-Lite spec and where its PNG is cached; the spec is validated against the schema the
    first time this content is seen (validation is most of `to_dict`'s cost; a chart already converted
    once was valid)."""
    if isinstance(chart, dict):  # a spec already (`memo.ChartSpec`: validated when built)
        spec = dict(chart)
        return spec, _png_path(spec)
    spec = chart.to_dict(validate=False)
    path = _png_path(spec)
    return (spec, path) if path.is_file() else (chart.to_dict(), path)


def _png_path(spec: dict) -> Path:
    import vl_convert as vlc

    key = combined_digest([json.dumps(spec, sort_keys=True, default=str), vlc.__version__, str(PNG_PPI)])
    return cache_dir() / "charts" / f"{key}.png"


@functools.cache
def bundle_script() -> str:
    """Vega, Vega-Lite and Vega-Embed as one inline module script (no CDN: works offline)."""
    import vl_convert as vlc

    path = cache_dir() / "charts" / f"vega-bundle-{vlc.__version__}.js"  # seconds to build: built once
    if path.is_file():
        js = path.read_text(encoding="utf-8")
    else:
        js = vlc.javascript_bundle("window.vegaEmbed = vegaEmbed;")
        atomic_write_text(path, js)
    return f'<script type="module" {BUNDLE_ATTR}="1">{js}</script>'


def chart_bundle(chart: Any, include_library: bool | None = None) -> dict[str, str]:
    """The mime bundle of an Altair chart: interactive HTML and a static PNG.

    The library goes with the first chart shown by this kernel (`include_library=None`).
    """

    if include_library is None:
        include_library = not _state["bundle_emitted"]
        _state["bundle_emitted"] = True
    spec, png_path = _spec(chart)
    div = f"vega-{uuid.uuid4().hex[:12]}"
    # Module scripts run in document order, after the library's own module script.
    # The comment tells Quarto not to parse the chart as an HTML table (its script holds "<table" strings).
    html = (f'{QUARTO_NO_TABLE}{bundle_script() if include_library else ""}<div id="{div}" class="vega-chart"></div>\n'
            f'<script type="module">window.vegaEmbed("#{div}", {json.dumps(spec)}, '
            '{"actions": false, "renderer": "svg"});</script>')
    return {"text/html": html, "image/png": base64.b64encode(chart_png(spec, png_path)).decode("ascii")}


def chart_png(spec: dict, path: Path | None = None) -> bytes:
    """The chart's PNG, cached by content (the spec and the vl-convert version, `_png_path`: pass it when
    known): a re-render after a prose edit converts no chart again."""
    import vl_convert as vlc

    path = path or _png_path(spec)
    if path.is_file():
        return path.read_bytes()
    png = vlc.vegalite_to_png(spec, ppi=PNG_PPI)
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)
    return png


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


def _words(text: str) -> list[str]:
    """What a cell's line may break between: spaces, and an interval's « ; » (the PDF breaks it there, see
    templates/tables.typ; the HTML keeps it whole and widens the column instead)."""
    return text.replace(f"{NBSP};{NBSP}", f"{NBSP}; ").split(" ")


WRAP_AT = 40  # characters: a cell longer than this wraps, so its length no longer sets the column width
WRAPPED_WIDTH = (12, 3 * WRAP_AT)  # a wrapping column's width: its cells' mean length, within these bounds
# About the characters of one table line on the PDF page (8 pt type on A4, 2 cm margins, with room to spare):
# pandoc shares the page width by the dashes, so dashes summing past this would squeeze a column under its
# longest word, which then prints over its neighbour.
TABLE_LINE = 120


def _fit_widths(widths: list[int], floors: list[int], total: int = TABLE_LINE) -> list[int]:
    """Widths that, shared out over a line of `total` characters as pandoc does, give every column at least its
    floor (its longest word): unchanged when they already do, else summing to at most `total` (when the floors
    allow), each column narrowed in proportion to its width above its floor, never below it."""
    if all(w * total >= f * sum(widths) for w, f in zip(widths, floors, strict=True)):
        return widths  # shared out over the line, every column still holds its longest word
    excess = sum(widths) - total
    slack = [w - f for w, f in zip(widths, floors, strict=True)]
    if excess <= 0 or sum(slack) <= 0:
        return widths
    share = min(1.0, excess / sum(slack))
    return [w - math.ceil(s * share) for w, s in zip(widths, slack, strict=True)]


def _column_width(name: str, cells: list[str]) -> int:
    """A column's share of a table line: its longest cell when nothing in it wraps; else the mean length of its
    cells, so that a column of paragraphs gets more of the line than a column of names that merely wraps once
    (equal widths made a short « Méthode » as wide as a long « Principe », whose lines then doubled)."""
    longest = max([len(name) // 2, *(len(c) for c in cells)], default=3)
    if longest <= WRAP_AT:
        return longest
    filled = [len(c) for c in cells if c not in ("", "—")]
    low, high = WRAPPED_WIDTH
    return int(min(max(sum(filled) / len(filled) if filled else WRAP_AT, low), high))


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
    # a long paragraph or formula wraps anyway (capped), and no column is narrower than its longest word,
    # header included (an interval's two halves are words, see `_words`).
    floors = [max((len(w) for t in [n, *(r[i] for r in cells)] for w in _words(t)), default=3)
              for i, n in enumerate(names)]
    widths = _fit_widths([max(_column_width(n, [r[i] for r in cells]), floor)
                          for (i, n), floor in zip(enumerate(names), floors, strict=True)], floors)
    numeric = [i > 0 and all(_NUMERIC.match(r[i]) for r in cells if r[i] not in ("", "—"))
               for i in range(len(names))]
    align = "|" + "|".join(("-" * max(3, w) + ":") if num else (":" + "-" * max(3, w))
                           for w, num in zip(widths, numeric, strict=True)) + "|"
    rows = ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(["| " + " | ".join(names) + " |", align, *rows])


def table(df: pd.DataFrame, index: bool = False, digits: int | None = None, decimal: str = ",") -> None:
    """Print a table as Markdown (use in a cell with `#| output: asis`; add `tbl-cap` for a caption)."""
    print("\n" + markdown_table(df, index=index, digits=digits, decimal=decimal) + "\n")
