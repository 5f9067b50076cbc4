"""Read and execute a `.qmd` without Quarto: the subset of Quarto this project's documents use.

jupytext cannot read `.qmd` without the quarto binary, hence this small reader. It expands
`{{< include >}}` (recursively, paths relative to the including file) keeping each line's origin for
error messages, splits Python cells (`#|` options) from Markdown, runs every cell and inline
`` `{python} expr` `` of one document in one Jupyter kernel, then writes pandoc Markdown per output
format: cell options honoured, figures and tables captioned and numbered, `@fig-`/`@tbl-`/`@sec-`
resolved, conditional content filtered, callout titles set.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


PYTHON_CELL = re.compile(r"^\{python(?:[\s,][^}]*)?\}\s*$")


INCLUDE = re.compile(r"^\s*\{\{<\s*include\s+(\S+?)\s*>\}\}\s*$")


SHORTCODE = re.compile(r"\{\{<\s*([\w-]+)\s*(.*?)\s*>\}\}")


INLINE = re.compile(r"`\{python\}\s+([^`]+)`")


PAGEBREAK_MARK = "[[PAGEBREAK]]"


PAGEBREAK = ("```{=typst}\n#pagebreak()\n```\n\n```{=html}\n"
             '<div style="page-break-after: always;"></div>\n```')


XREF_WORDS = {"fr": {"fig": "Figure", "tbl": "Tableau", "sec": "Section", "delim": "\u00a0:"},
              "en": {"fig": "Figure", "tbl": "Table", "sec": "Section", "delim": ":"}}


HTML_FORMATS = ("html", "html4", "html5", "revealjs")


# Where the Vega library goes: pandoc passes it through untouched, and parsing its megabyte costs a second,
# so the renderer puts the library in the written page (`inline_vega_library`).
BUNDLE_PLACEHOLDER = '<script type="module" data-vega-bundle="placeholder"></script>'


def inline_vega_library(page: Path) -> None:
    """Replace the placeholder in a written HTML page by the Vega library (inline: the page opens offline)."""
    from pipeline.report.display import bundle_script

    text = page.read_text(encoding="utf-8")
    if BUNDLE_PLACEHOLDER in text:
        page.write_text(text.replace(BUNDLE_PLACEHOLDER, bundle_script(), 1), encoding="utf-8")


class RenderError(RuntimeError):
    """A document could not be rendered; the message names the file and the cell."""


Origin = tuple[Path, int]  # source file and 1-based line, through includes


@dataclass
class Cell:
    source: str
    options: dict[str, Any]
    origin: Origin


@dataclass
class Text:
    text: str
    origins: list[Origin]


@dataclass
class Document:
    path: Path
    meta: dict[str, Any]
    parts: list[Text | Cell] = field(default_factory=list)
    includes: list[Path] = field(default_factory=list)

    def where(self, origin: Origin) -> str:
        path, line = origin
        try:
            path = path.relative_to(self.path.parent)
        except ValueError:
            pass
        return f"{path}:{line}"


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """(YAML front matter, body); the body keeps its trailing text untouched."""
    m = re.match(r"---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|$)", text, re.S)
    if not m:
        return {}, text
    return yaml.safe_load(m.group(1)) or {}, text[m.end():]


def merge(base: dict, top: dict) -> dict:
    """Deep merge: `top` wins."""
    out = dict(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _formats(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    fmt = meta.get("format") or {}
    if isinstance(fmt, str):
        return {fmt: {}}
    return {k: (v if isinstance(v, dict) else {}) for k, v in fmt.items()}


def merge_meta(project: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """Document metadata over the project's; a document `format:` picks the formats (as Quarto)."""
    meta = merge({k: v for k, v in project.items() if k != "project"}, document)
    proj, doc = _formats(project), _formats(document)
    meta["format"] = {k: merge(proj.get(k, {}), v) for k, v in (doc or proj).items()}
    return meta


def fence_state(state: str | None, line: str) -> tuple[bool, str | None]:
    """(line is code or a code fence, fence still open after it)."""
    m = FENCE.match(line)
    if state is None:
        return (True, m.group(1)) if m else (False, None)
    closes = m and m.group(1)[0] == state[0] and len(m.group(1)) >= len(state) and not m.group(2).strip()
    return True, None if closes else state


def expand(path: Path, depth: int = 0) -> tuple[list[str], list[Origin], list[Path]]:
    """Lines of `path` (front matter dropped) with includes expanded, each line's origin, includes."""
    if depth > 10:
        raise RenderError(f"{path}: includes nested more than 10 deep")
    text = path.read_text(encoding="utf-8")
    _, body = split_front_matter(text)
    first = text[:len(text) - len(body)].count("\n") + 1
    lines, origins, includes = [], [], []
    state = None
    for n, line in enumerate(body.splitlines(), first):
        code, state = fence_state(state, line)
        m = None if code else INCLUDE.match(line)
        if m:
            child = (path.parent / m.group(1)).resolve()
            if not child.is_file():
                raise RenderError(f"{path}:{n}: included file {m.group(1)} does not exist")
            sub, sub_origins, sub_includes = expand(child, depth + 1)
            lines += sub
            origins += sub_origins
            includes += [child, *sub_includes]
        else:
            lines.append(line)
            origins.append((path, n))
    return lines, origins, includes


def _cell_options(lines: list[str], origin: Origin, doc: Document) -> tuple[dict[str, Any], str]:
    n = 0
    while n < len(lines) and lines[n].startswith("#|"):
        n += 1
    try:
        options = yaml.safe_load("\n".join(ln[2:].strip() for ln in lines[:n])) or {} if n else {}
    except yaml.YAMLError as err:
        raise RenderError(f"{doc.where(origin)}: invalid `#|` cell options: {err}") from None
    return options, "\n".join(lines[n:])


def _meta_value(meta: dict[str, Any], key: str) -> str:
    value: Any = meta
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def _shortcodes(line: str, origin: Origin, doc: Document) -> str:
    if re.fullmatch(r"\s*\{\{<\s*pagebreak\s*>\}\}\s*", line):
        return PAGEBREAK_MARK  # one line here (line origins stay aligned), expanded in to_markdown

    def replace(m: re.Match) -> str:
        if m.group(1) == "meta":
            return _meta_value(doc.meta, m.group(2).strip("\"'"))
        raise RenderError(f"{doc.where(origin)}: shortcode {{{{< {m.group(1)} >}}}} is not supported "
                          "by the offline renderer (supported: include, pagebreak, meta)")

    return SHORTCODE.sub(replace, line)


def parse(path: Path, project_meta: dict[str, Any] | None = None) -> Document:
    """Read a `.qmd`: metadata merged over the project's, includes expanded, cells split out."""
    path = Path(path).resolve()
    meta, _ = split_front_matter(path.read_text(encoding="utf-8"))
    doc = Document(path, merge_meta(project_meta or {}, meta))
    lines, origins, doc.includes = expand(path)
    text: list[str] = []
    text_origins: list[Origin] = []
    state, cell, cell_start = None, None, 0
    for i, (line, origin) in enumerate(zip(lines, origins, strict=True)):
        opening = state is None
        code, state = fence_state(state, line)
        if cell is not None:  # inside a python cell
            if state is None:
                options, source = _cell_options(cell, origins[cell_start], doc)
                doc.parts.append(Cell(source, options, origins[cell_start]))
                cell = None
            else:
                cell.append(line)
        elif code and opening and PYTHON_CELL.match(FENCE.match(line).group(2).strip()):
            doc.parts.append(Text("\n".join(text), text_origins))
            text, text_origins, cell, cell_start = [], [], [], i
        else:
            text.append(line if code else _shortcodes(line, origin, doc))
            text_origins.append(origin)
    if cell is not None:
        raise RenderError(f"{doc.where(origins[cell_start])}: python cell is never closed")
    doc.parts.append(Text("\n".join(text), text_origins))
    return doc


class _ThisPython(KernelSpecManager):
    """The kernel runs the interpreter rendering the document (its venv), whatever is installed."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                "--log-level=ERROR"]  # nbclient adds an in-memory IPython history
        return KernelSpec(argv=argv, display_name="Python 3", language="python")


class _KernelManager(AsyncKernelManager):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(kernel_spec_manager=_ThisPython(), **kwargs)


def _option(cell: Cell, doc: Document, name: str, default: Any) -> Any:
    return cell.options.get(name, (doc.meta.get("execute") or {}).get(name, default))


# An inline expression's value as Quarto asks the kernel for it: its display forms (mime bundle).
INLINE_CODE = ("import json as _qmd_json\nfrom IPython import get_ipython as _qmd_ipython\n"
               "_qmd_forms = _qmd_ipython().display_formatter.format(({expr}))[0]\n"
               "print(_qmd_json.dumps({{k: v for k, v in _qmd_forms.items() if k in "
               "('text/html', 'text/markdown', 'text/latex', 'text/plain')}}), end='')")


def _escaped_markdown(text: str) -> str:
    """A `text/plain` value as Quarto 1.10 writes it: a quoted repr unquoted and its Markdown escaped."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return re.sub(r"([\\`*_{}\[\]()>#+,\-.!])", r"\\\1", text[1:-1].replace("\\", "\\\\"))
    return text


def inline_value(forms: dict[str, str], fmt: str) -> str:
    """What Quarto writes for an inline expression with these display forms (jupyter-inline.ts)."""
    order = ["text/html", "text/markdown"] if fmt in HTML_FORMATS else ["text/markdown"]
    for mime in [*order, "text/plain"]:
        if mime in forms:
            data = forms[mime]
            return (f"`{data}`{{=html}}" if mime == "text/html" else data if mime == "text/markdown"
                    else _escaped_markdown(data))
    return ""


def execute(doc: Document, cwd: Path, env: dict[str, str] | None = None,
            timeout: int | None = None) -> list[Any]:
    """Run the document's cells and inline expressions in one kernel; outputs per part.

    A cell part gets its Jupyter outputs (None when not evaluated); a text part, the display forms
    (mime bundles) of its inline expressions in order.
    """
    nb = nbformat.v4.new_notebook()
    index: list[tuple[int, int | None]] = []  # (part, inline expression number or None)
    for i, part in enumerate(doc.parts):
        if isinstance(part, Cell):
            if _option(part, doc, "eval", True):
                tags = ["raises-exception"] if _option(part, doc, "error", False) else []
                nb.cells.append(nbformat.v4.new_code_cell(part.source, metadata={"tags": tags}))
                index.append((i, None))
        else:
            for k, expr in enumerate(INLINE.findall(part.text)):
                nb.cells.append(nbformat.v4.new_code_cell(INLINE_CODE.format(expr=expr.strip())))
                index.append((i, k))
    outputs: list[Any] = [None] * len(doc.parts)
    if not nb.cells:
        return outputs
    client = NotebookClient(nb, kernel_name="python3", kernel_manager_class=_KernelManager, timeout=timeout,
                            resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute(**({} if env is None else {"env": env}))
    except CellExecutionError as err:
        failed = next((n for n, c in enumerate(nb.cells) if "raises-exception" not in c.metadata.get("tags", [])
                       and any(o.get("output_type") == "error" for o in c.get("outputs", []))), None)
        where = _describe(doc, index[failed]) if failed is not None else "a cell"
        errors = [o for o in nb.cells[failed].outputs if o.output_type == "error"] if failed is not None else []
        detail = _strip_ansi("\n".join(errors[0].traceback) if errors else str(err)).strip()
        raise RenderError(f"{doc.path.name}: {where} failed:\n{detail}") from None
    except (CellTimeoutError, DeadKernelError, TimeoutError, RuntimeError) as err:
        raise RenderError(f"{doc.path.name}: the Jupyter kernel failed: {err}") from None
    for cell, (part, k) in zip(nb.cells, index, strict=True):
        if k is None:
            outputs[part] = cell.outputs
        else:
            text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream"
                           and o.get("name") == "stdout")
            outputs[part] = [*(outputs[part] or []), json.loads(text)]
    return outputs


def _describe(doc: Document, position: tuple[int, int | None]) -> str:
    part, k = position
    item = doc.parts[part]
    if isinstance(item, Cell):
        label = item.options.get("label")
        return f"cell '{label}' ({doc.where(item.origin)})" if label else f"the cell at {doc.where(item.origin)}"
    m = list(INLINE.finditer(item.text))[k]
    origin = item.origins[item.text.count("\n", 0, m.start())]
    return f"inline expression `{m.group(1).strip()}` ({doc.where(origin)})"


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@dataclass
class Emitter:
    """Turns executed parts into pandoc Markdown for one output format ("html", "typst", "revealjs")."""

    fmt: str
    media_dir: Path
    counter: int = 0
    vega_library: bool = False  # the Vega library went out once already

    @property
    def html(self) -> bool:
        return self.fmt in HTML_FORMATS

    def image(self, data: str, ext: str) -> str:
        self.counter += 1
        self.media_dir.mkdir(parents=True, exist_ok=True)
        path = self.media_dir / f"output-{self.counter}.{ext}"
        path.write_bytes(base64.b64decode(data))
        return path.as_posix()

    def raw_html(self, html: str) -> str:
        """Raw HTML, with the Vega library inlined before the first chart only."""
        from pipeline.report.display import BUNDLE_ATTR

        html = re.sub(rf'<script type="module" {BUNDLE_ATTR}[^>]*>.*?</script>', "", html, flags=re.S)
        if "vegaEmbed(" in html and not self.vega_library:
            html, self.vega_library = BUNDLE_PLACEHOLDER + html, True
        return f"```{{=html}}\n{html}\n```"

    def display(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> tuple[str, str]:
        """(kind, markdown) of one display output, with Quarto's mime priority for the format; an image's
        width from its metadata (IPython's `Image(width=...)`) kept, as Quarto does."""
        order = ["text/html", "text/markdown", "image/svg+xml", "image/png", "image/jpeg"] if self.html \
            else ["text/markdown", "image/svg+xml", "image/png", "image/jpeg"]
        for mime in order:
            if mime in data:
                if mime == "text/html":
                    return "html", self.raw_html(data[mime])
                if mime == "text/markdown":
                    return "markdown", data[mime]
                width = ((metadata or {}).get(mime) or {}).get("width")
                size = f"{{width={int(width)}}}" if width else ""
                if mime == "image/svg+xml":
                    return "image", f"![]({self.image(base64.b64encode(data[mime].encode()).decode(), 'svg')}){size}"
                return "image", f"![]({self.image(data[mime], mime.split('/')[1].replace('jpeg', 'jpg'))}){size}"
        return "text", f"```\n{data.get('text/plain', '')}\n```"

    def cell(self, cell: Cell, outputs: list[dict], doc: Document) -> str:
        if not _option(cell, doc, "include", True):
            return ""
        pieces = []
        if _option(cell, doc, "echo", True):
            pieces.append(f"```python\n{cell.source.strip()}\n```")
        shown = _option(cell, doc, "output", True)
        body, kinds = [], []
        for out in outputs if shown else []:
            kind, md = self._output(out, shown == "asis", _option(cell, doc, "warning", True))
            if md:
                body.append(md)
                kinds.append(kind)
        pieces.extend(self._wrap(cell, body, kinds))
        return "\n\n".join(pieces)

    def _output(self, out: dict, asis: bool, warnings_shown: bool) -> tuple[str, str]:
        kind = out.get("output_type")
        if kind == "stream":
            if out.get("name") == "stderr" and not warnings_shown:
                return "", ""
            return ("markdown", out["text"]) if asis else ("text", f"```\n{out['text'].rstrip()}\n```")
        if kind in ("display_data", "execute_result"):
            if asis and "text/markdown" in out["data"]:
                return "markdown", out["data"]["text/markdown"]
            return self.display(out["data"], out.get("metadata"))
        if kind == "error":
            return "text", "```\n" + _strip_ansi("\n".join(out.get("traceback", []))) + "\n```"
        return "", ""

    def _wrap(self, cell: Cell, body: list[str], kinds: list[str]) -> list[str]:
        label = str(cell.options.get("label", ""))
        fig_cap, tbl_cap = cell.options.get("fig-cap"), cell.options.get("tbl-cap")
        if not body:
            return body
        if fig_cap and not label.startswith("tbl-"):
            numbered = label.startswith("fig-")
            caption = f"[[CAPTION:{label}]] {fig_cap}" if numbered else str(fig_cap)
            ident = f"#{label}" if numbered else ""
            if kinds[0] == "image":
                return [f"![{caption}]{body[0][3:]}{{{ident}}}", *body[1:]]
            return [f"::: {{{ident} .figure}}\n\n" + "\n\n".join(body)
                    + f"\n\n::: {{.figure-caption}}\n{caption}\n:::\n\n:::"]
        if tbl_cap:
            numbered = label.startswith("tbl-")
            caption = f"[[CAPTION:{label}]] {tbl_cap}" if numbered else str(tbl_cap)
            ident = f"#{label}" if numbered else ""
            return [f"::: {{{ident} .table-figure}}\n\n::: {{.table-caption}}\n{caption}\n:::\n\n"
                    + "\n\n".join(body) + "\n\n:::"]
        return body


def to_markdown(doc: Document, outputs: list[Any], emitter: Emitter) -> str:
    """The executed document as pandoc Markdown for the emitter's format."""
    pieces = []
    for part, out in zip(doc.parts, outputs, strict=True):
        if isinstance(part, Cell):
            pieces.append(emitter.cell(part, out or [], doc))
        else:
            pieces.append(_inline_values(doc, part, out or [], emitter.fmt))
    text = conditional_content("\n".join(pieces).replace(PAGEBREAK_MARK, PAGEBREAK), emitter.fmt)
    return number_crossrefs(callout_titles(text), xref_words(doc.meta))


def _inline_values(doc: Document, part: Text, values: list[dict[str, str]], fmt: str) -> str:
    """A text part with each inline expression replaced by its value. An empty value is an error: Quarto
    leaves such an expression's code in the page (`{python} f(ctx)` printed), so the fallback refuses it too."""
    found = iter(values)

    def value(m: re.Match) -> str:
        written = inline_value(next(found, {}), fmt)
        if not written:
            origin = part.origins[part.text.count("\n", 0, m.start())]
            raise RenderError(f"{doc.where(origin)}: inline expression `{m.group(1).strip()}` gave an empty "
                              "value, which Quarto prints as its code: make it return the text around it too "
                              "(e.g. its punctuation)")
        return written

    return INLINE.sub(value, part.text)


def _outside_code(text: str, fn: Any) -> str:
    """Apply `fn` to the runs of lines outside fenced code blocks."""
    out, run, state = [], [], None
    for line in text.split("\n"):
        code, state = fence_state(state, line)
        if code:
            if run:
                out.append(fn("\n".join(run)))
                run = []
            out.append(line)
        else:
            run.append(line)
    if run:
        out.append(fn("\n".join(run)))
    return "\n".join(out)


def _format_matches(names: str, fmt: str) -> bool:
    for name in re.split(r"[,\s]+", names.strip()):
        name = name.split(":")[0]  # html:js
        if name == fmt or (name == "html" and fmt in HTML_FORMATS) or (name == "latex" and fmt == "pdf"):
            return True
    return False


def _visible(attrs: str, fmt: str) -> bool:
    when = re.search(r'when-format="([^"]*)"', attrs)
    unless = re.search(r'unless-format="([^"]*)"', attrs)
    shown = (when is None or _format_matches(when.group(1), fmt)) and \
        (unless is None or not _format_matches(unless.group(1), fmt))
    return shown if ".content-visible" in attrs else not shown


def conditional_content(text: str, fmt: str) -> str:
    """Keep or drop `.content-visible` / `.content-hidden` divs and spans for this format."""
    out: list[str] = []
    stack: list[str] = []  # per open div: "keep" (ordinary), "unwrap" (shown) or "drop" (hidden)
    state = None
    for line in text.split("\n"):
        dropping = "drop" in stack
        code, state = fence_state(state, line)
        opening = None if code else re.match(r"^:{3,}\s*(\{[^}]*\}|[^:\s])", line)
        if opening and ".content-" in opening.group(1):
            stack.append("unwrap" if _visible(opening.group(1), fmt) else "drop")
            continue
        if opening:
            stack.append("keep")
        elif not code and re.match(r"^:{3,}\s*$", line) and stack:
            if stack.pop() != "keep":
                continue
        if not dropping:
            out.append(line)
    spans = re.compile(r"\[([^\]]*)\]\{(\.content-(?:visible|hidden)[^}]*)\}")
    return _outside_code("\n".join(out), lambda t: spans.sub(
        lambda m: m.group(1) if _visible(m.group(2), fmt) else "", t))


def callout_titles(text: str) -> str:
    """A heading first inside a callout is its title, not a section (as in Quarto)."""
    return re.sub(r"(^:::+\s*\{[^}\n]*\.callout-[^}\n]*\}\s*\n)\s*#+\s+([^\n]+)\n",
                  lambda m: f"{m.group(1)}::: {{.callout-title}}\n{m.group(2)}\n:::\n", text, flags=re.M)


def xref_words(meta: dict[str, Any]) -> dict[str, str]:
    """Reference prefixes from `crossref:` (fig-prefix, tbl-title, ...) or the language's defaults."""
    lang = str(meta.get("lang", "en"))[:2]
    words = dict(XREF_WORDS.get(lang, XREF_WORDS["en"]))
    crossref = meta.get("crossref") or {}
    for kind in ("fig", "tbl", "sec"):
        words[kind] = str(crossref.get(f"{kind}-prefix", crossref.get(f"{kind}-title", words[kind])))
    if "title-delim" in crossref:
        words["delim"] = str(crossref["title-delim"])
    return words


def _section_numbers(text: str) -> dict[str, str]:
    """Section numbers as pandoc's --number-sections gives them, by `sec-` identifier."""
    numbers: dict[str, str] = {}
    counts = [0] * 6

    def scan(run: str) -> str:
        for m in re.finditer(r"^(#{1,6})\s+(.*?)\s*(\{[^}]*\})?\s*$", run, flags=re.M):
            level, attrs = len(m.group(1)), m.group(3) or ""
            if ".unnumbered" in attrs or re.search(r"[\s{]-[\s}]", attrs):
                continue
            counts[level - 1] += 1
            counts[level:] = [0] * (6 - level)
            ident = re.search(r"#(sec-[\w-]+)", attrs)
            if ident:
                numbers[ident.group(1)] = ".".join(str(c) for c in counts[:level])
        return run

    _outside_code(text, scan)
    return numbers


def number_crossrefs(text: str, words: dict[str, str] | None = None) -> str:
    """Number figures and tables in order of appearance; resolve @fig-/@tbl-/@sec- as links."""
    words = words or XREF_WORDS["fr"]
    numbers = _section_numbers(text)
    seen = {"fig": 0, "tbl": 0}
    for m in re.finditer(r"\{#((fig|tbl)-[\w-]+)[\s}]", text):
        if m.group(1) not in numbers:
            seen[m.group(2)] += 1
            numbers[m.group(1)] = str(seen[m.group(2)])
    # A figure written in Markdown, ![caption](image){#fig-x}, is captioned like a cell's.
    text = _outside_code(text, lambda run: re.sub(
        r"!\[(?!\[\[CAPTION)([^\]]*)\]\(([^)]*)\)\{#(fig-[\w-]+)",
        lambda m: f"![[[CAPTION:{m.group(3)}]] {m.group(1)}]({m.group(2)}){{#{m.group(3)}", run))
    text = re.sub(r"\[\[CAPTION:((fig|tbl)-[\w-]+)\]\]",
                  lambda m: f"{words[m.group(2)]}\u00a0{numbers[m.group(1)]}{words['delim']}", text)

    def ref(m: re.Match) -> str:
        bare, kind, rest = m.group(1), m.group(2).lower(), m.group(3)
        key = f"{kind}-{rest}"
        if key not in numbers:
            raise RenderError(f"cross-reference @{key} points to nothing (no label '{key}'; "
                              "figures and tables need a caption)")
        return f"[{'' if bare else words[kind] + chr(0xA0)}{numbers[key]}](#{key})"

    xref = r"(-?)@((?i:fig|tbl|sec))-([\w-]*\w)"

    def resolve(run: str) -> str:
        # A hand-written table caption ": caption {#tbl-x}" gets its number too.
        run = re.sub(r"^: (.*?)\s*\{#(tbl-[\w-]+)\}\s*$", lambda m: f": {words['tbl']}\u00a0"
                     f"{numbers[m.group(2)]}{words['delim']} {m.group(1)} {{#{m.group(2)}}}", run, flags=re.M)
        run = re.sub(rf"\[{xref}\]", ref, run)  # [@fig-x] and [-@fig-x] (number only)
        return re.sub(rf"(?<![\w\[]){xref}", ref, run)

    return _outside_code(text, resolve)
