"""Model formats ``predict -m`` recognises by itself, and one way to load and run any of them.

* a SegToolkit model folder (``model.json``: :mod:`..model_package`),
* an nnU-Net v2 trained model folder, its dataset folder, or a ``.zip`` of either (:mod:`.nnunet`; read safely by
  :mod:`.nnunet_files`, unpacked by :mod:`.archive`),
* a task of several nnU-Net models merged into one label map, such as TotalSegmentator's "total" (:mod:`.task`),
* a model in the store, by name (``segtoolkit models list``; :mod:`..store`).

Open and run any of them with :mod:`.loading` (``open_model``, ``predict_any``); :mod:`.convert` brings them into
the store.
"""
