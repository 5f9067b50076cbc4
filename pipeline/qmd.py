"""Read and execute a `.qmd` without Quarto: the subset of Quarto this project's chapters use.

Supported: YAML front matter merged over `_quarto.yml`; `{{< include >}}` (recursive);
`{{< pagebreak >}}`; Python cells with `#|` options (echo, eval, include, output incl. asis,
warning, label, fig-cap, tbl-cap); inline `` `{python} expr` ``; `@fig-`/`@tbl-`/`@sec-`
cross-references numbered in French; callouts with a `##` title. jupytext cannot read `.qmd`
without the quarto binary, hence this small parser.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

INCLUDE = re.compile(r"^\{\{<\s*include\s+(\S+?)\s*>\}\}\s*$", re.M)
PAGEBREAK = re.compile(r"^\{\{<\s*pagebreak\s*>\}\}\s*$", re.M)
CELL = re.compile(r"^```\{python\}[^\n]*\n(.*?)^```\s*$", re.M | re.S)
INLINE = re.compile(r"`\{python\}\s+([^`]+)`")
XREF_LABELS = {"fig": "Figure", "tbl": "Tableau", "sec": "Section"}


class RenderError(RuntimeError):
    """A document could not be rendered; the message names the file and the cell."""


@dataclass
class Cell:
    source: str
    options: dict[str, Any]
    line: int  # line of the cell in the expanded document, for error messages


@dataclass
class Document:
    path: Path
    meta: dict[str, Any]
    parts: list[str | Cell] = field(default_factory=list)  # markdown text and cells, in order


# ---------------------------------------------------------------- parsing


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end > 0:
            return yaml.safe_load(text[3:end]) or {}, text[end + 4:].lstrip("\n")
    return {}, text


def expand_includes(text: str, base: Path, depth: int = 0) -> str:
    """Replace include shortcodes by the file's content (front matter dropped), recursively."""
    if depth > 10:
        raise RenderError(f"includes nested too deeply under {base}")

    def replace(match: re.Match) -> str:
        path = (base / match.group(1)).resolve()
        if not path.is_file():
            raise RenderError(f"{base}: included file {match.group(1)} does not exist")
        _, body = split_front_matter(path.read_text(encoding="utf-8"))
        return expand_includes(body, path.parent, depth + 1)

    return INCLUDE.sub(replace, text)


def _cell_options(source: str) -> tuple[dict[str, Any], str]:
    lines = source.splitlines()
    opts = [ln[3:] for ln in lines if ln.startswith("#| ")]
    code = "\n".join(ln for ln in lines if not ln.startswith("#|"))
    return (yaml.safe_load("\n".join(opts)) or {}) if opts else {}, code


def merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse(path: Path, project_meta: dict[str, Any] | None = None) -> Document:
    meta, body = split_front_matter(path.read_text(encoding="utf-8"))
    body = PAGEBREAK.sub("```{=typst}\n#pagebreak()\n```", expand_includes(body, path.parent))
    doc = Document(path, merge(project_meta or {}, meta))
    pos = 0
    for m in CELL.finditer(body):
        doc.parts.append(body[pos:m.start()])
        options, code = _cell_options(m.group(1))
        doc.parts.append(Cell(code, options, body.count("\n", 0, m.start()) + 1))
        pos = m.end()
    doc.parts.append(body[pos:])
    return doc


# ---------------------------------------------------------------- execution


def _option(cell: Cell, doc: Document, name: str, default: Any) -> Any:
    return cell.options.get(name, doc.meta.get("execute", {}).get(name, default))


def execute(doc: Document, cwd: Path, timeout: int = 3600) -> list[Any]:
    """Run the document's cells and inline expressions in one kernel; return outputs per part."""
    nb = nbformat.v4.new_notebook()
    index: list[tuple[int, int | None]] = []  # (part, inline expression number or None)
    for i, part in enumerate(doc.parts):
        if isinstance(part, Cell):
            if _option(part, doc, "eval", True):
                nb.cells.append(nbformat.v4.new_code_cell(part.source))
                index.append((i, None))
        else:
            for k, expr in enumerate(INLINE.findall(part)):
                nb.cells.append(nbformat.v4.new_code_cell(f"print({expr.strip()}, end='')"))
                index.append((i, k))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute()
    except CellExecutionError as err:
        failed = next((n for n, c in enumerate(nb.cells) if any(o.get("output_type") == "error"
                                                              for o in c.get("outputs", []))), None)
        where = _describe(doc, index[failed]) if failed is not None else "a cell"
        raise RenderError(f"{doc.path}: {where} failed:\n{_strip_ansi(str(err))}") from None
    outputs: list[Any] = [None] * len(doc.parts)
    for cell, (part, k) in zip(nb.cells, index, strict=True):
        if k is None:
            outputs[part] = cell.outputs
        else:
            text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
            outputs[part] = [*(outputs[part] or []), text]
    return outputs


def _describe(doc: Document, position: tuple[int, int | None]) -> str:
    part, k = position
    cell = doc.parts[part]
    if isinstance(cell, Cell):
        label = cell.options.get("label")
        return f"cell '{label}'" if label else f"the cell at line {cell.line} of the expanded document"
    return f"inline expression #{k + 1} `{INLINE.findall(cell)[k]}`"


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


# ---------------------------------------------------------------- outputs to markdown


@dataclass
class Emitter:
    """Turns executed parts into pandoc Markdown for one output format ("html", "typst", "revealjs")."""

    fmt: str
    media_dir: Path
    counter: int = 0

    @property
    def html(self) -> bool:
        return self.fmt in ("html", "revealjs")

    def image(self, data: str, ext: str) -> str:
        self.counter += 1
        self.media_dir.mkdir(parents=True, exist_ok=True)
        path = self.media_dir / f"output-{self.counter}.{ext}"
        path.write_bytes(base64.b64decode(data))
        return path.as_posix()

    def display(self, data: dict[str, Any]) -> tuple[str, str]:
        """(kind, markdown) of one display output, with Quarto's mime priority for the format."""
        order = ["text/html", "text/markdown", "image/svg+xml", "image/png", "image/jpeg"] if self.html \
            else ["text/markdown", "image/svg+xml", "image/png", "image/jpeg"]
        for mime in order:
            if mime in data:
                if mime == "text/html":
                    return "html", f"```{{=html}}\n{data[mime]}\n```"
                if mime == "text/markdown":
                    return "markdown", data[mime]
                if mime == "image/svg+xml":
                    return "image", self.image(base64.b64encode(data[mime].encode()).decode(), "svg")
                return "image", self.image(data[mime], mime.split("/")[1].replace("jpeg", "jpg"))
        return "text", f"```\n{data.get('text/plain', '')}\n```"

    def cell(self, cell: Cell, outputs: list[dict], doc: Document) -> str:
        if not _option(cell, doc, "include", True):
            return ""
        pieces = []
        if _option(cell, doc, "echo", True):
            pieces.append(f"```python\n{cell.source.strip()}\n```")
        shown = _option(cell, doc, "output", True)
        warnings_shown = _option(cell, doc, "warning", True)
        body, kinds = [], []
        for out in outputs if shown else []:
            kind, md = self._output(out, shown == "asis", warnings_shown)
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
            return self.display(out["data"])
        return "", ""

    def _wrap(self, cell: Cell, body: list[str], kinds: list[str]) -> list[str]:
        label, fig_cap, tbl_cap = cell.options.get("label", ""), cell.options.get("fig-cap"), \
            cell.options.get("tbl-cap")
        if label.startswith("fig-") and fig_cap and body:
            caption = f"[[CAPTION:{label}]] {fig_cap}"
            if kinds[0] == "image":
                return [f"![{caption}]({body[0]}){{#{label} width=100%}}", *body[1:]]
            return [f"::: {{#{label} .figure}}\n\n" + "\n\n".join(body)
                    + f"\n\n::: {{.figure-caption}}\n{caption}\n:::\n\n:::"]
        if label.startswith("tbl-") and tbl_cap and body:
            caption = f"::: {{.table-caption}}\n[[CAPTION:{label}]] {tbl_cap}\n:::"
            return [f"::: {{#{label} .table-figure}}\n\n{caption}\n\n" + "\n\n".join(body) + "\n\n:::"]
        return body


def to_markdown(doc: Document, outputs: list[Any], emitter: Emitter) -> str:
    """The executed document as pandoc Markdown: inline values substituted, cross-refs numbered."""
    pieces = []
    for part, out in zip(doc.parts, outputs, strict=True):
        if isinstance(part, Cell):
            pieces.append(emitter.cell(part, out or [], doc))
        else:
            values = iter(out or [])
            pieces.append(INLINE.sub(lambda _m, it=values: next(it, "??"), part))
    return number_crossrefs(callout_titles("\n".join(pieces)))


def callout_titles(text: str) -> str:
    """`## Title` first inside a callout becomes a callout title, not a section heading."""
    return re.sub(r"(^:::+\s*\{\.callout-[^}]*\}\s*\n)\s*#+\s+([^\n]+)\n",
                  lambda m: f"{m.group(1)}::: {{.callout-title}}\n{m.group(2)}\n:::\n", text, flags=re.M)


def _section_numbers(text: str) -> dict[str, str]:
    numbers: dict[str, str] = {}
    counts = [0] * 6
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        m = re.match(r"^(#{1,6})\s+(.*?)\s*(\{[^}]*\})?\s*$", line)
        if in_code or not m:
            continue
        level, attrs = len(m.group(1)), m.group(3) or ""
        if ".unnumbered" in attrs or "-}" in attrs:
            continue
        counts[level - 1] += 1
        counts[level:] = [0] * (6 - level)
        ident = re.search(r"#(sec-[\w-]+)", attrs)
        if ident:
            numbers[ident.group(1)] = ".".join(str(c) for c in counts[:level])
    return numbers


def number_crossrefs(text: str) -> str:
    """Number figures and tables in order of appearance and resolve @fig-/@tbl-/@sec- references."""
    numbers: dict[str, str] = _section_numbers(text)
    seen = {"fig": 0, "tbl": 0}
    for m in re.finditer(r"\{#((fig|tbl)-[\w-]+)[\s}]", text):
        if m.group(1) not in numbers:
            seen[m.group(2)] += 1
            numbers[m.group(1)] = str(seen[m.group(2)])
    text = re.sub(r"\[\[CAPTION:((fig|tbl)-[\w-]+)\]\]",
                  lambda m: f"{XREF_LABELS[m.group(2)]} {numbers.get(m.group(1), '?')} :", text)
    # Markdown tables written by hand: ": caption {#tbl-x}" gets its number too.
    text = re.sub(r"^: (.*?)\s*\{#(tbl-[\w-]+)\}\s*$",
                  lambda m: f": Tableau {numbers.get(m.group(2), '?')} : {m.group(1)} {{#{m.group(2)}}}",
                  text, flags=re.M)

    def ref(m: re.Match) -> str:
        key, kind = m.group(1), m.group(2)
        if key not in numbers:
            raise RenderError(f"cross-reference @{key} points to nothing (no label '{key}')")
        return f"[{XREF_LABELS[kind]}\u00a0{numbers[key]}](#{key})"

    return re.sub(r"(?<![\w\[])@((fig|tbl|sec)-[\w-]*\w)", ref, text)
