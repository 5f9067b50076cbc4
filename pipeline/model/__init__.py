"""Model: the image classifier.

`backbones` (network registry and the LightningModule), `training` (the Lightning loop and the
study's cached `predict_with_weights`), `features` (last-layer mode: features once, one head per
weighting), `contract` (the course's `train_classifier` / `pred_classifier` and their CLI).
May import: `pipeline.cache`, `pipeline.config`, `pipeline.data`, `pipeline.progress`.
"""
