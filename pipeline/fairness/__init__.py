"""Fairness methods and measures.

`weighting` (pre-processing registry), `postprocess` (post-processing registry and the
patient-disjoint fit/score protocol), `metrics` (per-group metrics, patient-bootstrap intervals),
`grid` (every weighting x every post-processor, Pareto fronts), `data_bias` and `simpson` (bias
statistics of the data), `data_analysis` (everything the data chapter shows, computed once).
May import: `pipeline.cache`, `pipeline.config`, `pipeline.data`, `pipeline.model`.
"""
