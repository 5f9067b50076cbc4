"""Rendering: with Quarto when installed, else the offline fallback (nbclient + pandoc + Typst).

`renderer` (render the report and the slides, slide overflow check), `qmd` (read and execute a
`.qmd` without Quarto), `templates/` (CSS, Typst header, Lua filter).
May import: everything below it, `report.display` included.
"""
