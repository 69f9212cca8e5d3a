"""User interfaces on top of the core: the ``segtoolkit`` command line and the demo."""
