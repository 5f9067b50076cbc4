"""Data: from the user's folder to the canonical frame (one row per image).

`schema` (column names, NIH columns), `folder` (read and validate a folder: `check_dataset`,
`load_dataset`), `quality` (what the study does about each problem found), `images` (decode-once
pixel cache), `demo` (the synthetic dataset with planted biases).
May import: `pipeline.cache`, `pipeline.config`.
"""
