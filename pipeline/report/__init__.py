"""What the chapters and the slides show, formatted from the computed study (nothing is computed here).

One module per chapter: `data` (02), `preprocessing` (03), `postprocessing` (04), `analysis` (05),
`conclusion` (06 and the appendix), `slides`. Shared: `french` (French number formatting and
phrases), `style` (palette, Altair theme, chart helpers), `charts` (result charts), `tables` (result
tables and sentences), `display` (show a chart or a table in Quarto and in the fallback).
May import: everything below it (`cache`, `config`, `data`, `model`, `fairness`, `study`).
"""
