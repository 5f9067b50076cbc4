"""The fairness study of a chest X-ray classifier, as a library; the chapters only call it.

Layers, from the folder to the chapter (a module imports only from its own layer or the ones above):

    cache, config      the one config (study.yml) and the on-disk cache
    data/              metadata schema, folder loading and validation, decoded images, the demo
    model/             backbones, training and the course's contract, last-layer features
    fairness/          weightings, post-processors, metrics and bootstrap, the grid, data-bias statistics
    study              runs (or reads from the cache) the whole study: `study.context()`
    report/            what each chapter and the slides show: one module per chapter, shared style
    render/            the offline renderer (Quarto is the reference) and its templates
    cli, train, bench  entry points: `python -m pipeline`, `python -m pipeline.train`, `python -m pipeline.bench`
"""
