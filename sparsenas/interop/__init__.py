"""Bridges to other NAS frameworks. Each module imports its framework lazily, so that the core of
sparsenas never needs it installed (``sparsenas.interop.nni``: ``pip install "sparsenas[nni]"``)."""
