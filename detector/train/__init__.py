"""Training and export of inscope's CenterNet-style detectors (optional ``[train]`` extra).

Everything here needs torch (``pip install 'inscope[train]'``) except :mod:`.synth` (the
synthetic crop pool, numpy only) and :mod:`.cli` (whose ``register`` imports nothing
heavy). Nothing outside this package imports torch.
"""
