"""SegToolkit core: medical image segmentation without Slicer.

The package reads like the pipeline:

* :mod:`SegToolkitLib.io`: images and label maps in and out (NIfTI, NRRD, DICOM series, DICOM SEG and RTSTRUCT,
  ``.seg.nrrd``), geometry kept, every write verified;
* :mod:`SegToolkitLib.measurement`: volumes, diameters and intensity statistics; evaluation metrics; DICOM SR;
* :mod:`SegToolkitLib.samples`: the built-in phantom and the public sample-data loader;
* :mod:`SegToolkitLib.methods`: segmentation methods (``classic``, ``atlas``, ``deep`` with nnU-Net and
  TotalSegmentator model folders and the model store);
* :mod:`SegToolkitLib.cohort`: one method over a whole cohort on a Dask cluster, with measurements and QC;
* :mod:`SegToolkitLib.interfaces`: the ``segtoolkit`` command line and the demo.

It never imports ``slicer``, ``qt`` or ``ctk``; the Slicer modules in ``SegToolkit/`` call into it.
"""

__version__ = "0.1.0"
