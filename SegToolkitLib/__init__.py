"""SegToolkit core: medical image segmentation without Slicer.

The package reads like the pipeline:

* :mod:`SegToolkitLib.io`: images and label maps in and out (NIfTI, NRRD, DICOM, ``.seg.nrrd``), geometry kept;
* :mod:`SegToolkitLib.methods`: segmentation methods (``classic``, ``atlas``, ``deep``);
* :mod:`SegToolkitLib.measurement`: volumes, diameters and intensity statistics; evaluation metrics;
* :mod:`SegToolkitLib.samples`: the built-in phantom and the public sample-data loader;
* :mod:`SegToolkitLib.interfaces`: the ``segtoolkit`` command line and the demo.

It never imports ``slicer``, ``qt`` or ``ctk``; the Slicer modules in ``SegToolkit/`` call into it.
"""

__version__ = "0.1.0"
