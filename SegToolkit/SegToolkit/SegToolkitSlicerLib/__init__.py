"""Qt-free part of the SegToolkit Slicer module: the MRML adapter (:mod:`.mrml`) and the logic (:mod:`.logic`)
that runs SegToolkitLib methods on MRML nodes. Importable with the ``slicer-core`` wheel, so it is tested with
pytest outside the application."""
