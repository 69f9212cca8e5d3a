"""What the SegToolkit module does, without the GUI: SegToolkitLib methods run on MRML nodes.

Every method takes nodes and plain values, converts them with :mod:`.mrml` (world LPS SimpleITK images, LPS
seeds), calls SegToolkitLib, and writes segments (names, colours, terminology; existing segments are kept unless
``overwrite``). Long operations (atlas, deep learning) are returned as :class:`~.jobs.Job` objects so the GUI can
run their computation on a worker thread; :func:`~.jobs.run_job` runs one synchronously.

Usable from the Slicer Python console::

    from SegToolkitSlicerLib.logic import SegToolkitSlicerLogic
    logic = SegToolkitSlicerLogic(slicer.mrmlScene)
    ids = logic.snake(volume, seeds, segmentation)
    ids = logic.atlas(target, [(atlas_volume, atlas_segmentation)], transform="affine")
    ids = logic.predict(volume, "/path/to/model")
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk

from SegToolkitLib.errors import InputError
from SegToolkitLib.io import LabelMap, LabelTable
from SegToolkitLib.progress import CancelToken, ProgressCallback

from . import mrml
from .jobs import Job, run_job

PREVIEW_NODE_NAME = "SegToolkit preview"
MODEL_JSON = "model.json"


@dataclass
class ModelInfo:
    """A deep model as listed in the GUI: a model folder, or a model of the store (``store_name``; not downloaded
    yet when ``downloadable``)."""

    name: str
    folder: Path
    labels: list[str]
    channels: list[str]
    store_name: str = ""
    downloadable: bool = False


def store_models() -> list[ModelInfo]:
    """The model store's models (``segtoolkit models list``): installed ones with their classes, and the catalog's
    models that can be downloaded."""
    from SegToolkitLib.methods.deep.catalog import CATALOG, task_classes
    from SegToolkitLib.methods.deep.store import list_models, model_path, read_entry

    found = []
    for row in list_models():
        name = row["name"]
        if row["installed"]:
            try:
                entry = read_entry(name)
            except InputError:
                continue
            classes = [entry["classes"][key] for key in sorted(entry.get("classes", {}), key=int)]
            found.append(ModelInfo(name, model_path(name), classes, [], store_name=name))
        elif name in CATALOG:
            classes = list(task_classes(CATALOG[name]).values())
            found.append(ModelInfo(name, model_path(name), classes, [], store_name=name, downloadable=True))
    return found


def find_models(folders: Iterable[Path | str]) -> list[ModelInfo]:
    """Model folders (holding a valid ``model.json``) directly inside each folder, or the folder itself."""
    from SegToolkitLib.methods.deep.model_package import read_model_json

    found: dict[Path, ModelInfo] = {}
    for folder in folders:
        folder = Path(folder)
        if (folder / MODEL_JSON).is_file():
            candidates = [folder]
        else:
            candidates = [path.parent for path in sorted(folder.glob(f"*/{MODEL_JSON}"))]
        for model_dir in candidates:
            try:
                meta = read_model_json(model_dir)
            except InputError:
                continue  # a half-written or foreign folder is simply not a model to offer
            labels = LabelTable.from_mapping(meta["labels"])
            found[model_dir.resolve()] = ModelInfo(model_dir.name, model_dir, [label.name for label in labels],
                                                   list(meta["channels"]))
    return list(found.values())


def renumbered_by_name(label_map: LabelMap, names: dict[str, int], colors: dict[str, tuple]) -> LabelMap:
    """The label map with each label's value replaced by the value its *name* has in ``names`` (new names are
    appended), so atlases or training cases numbered differently agree on what each value means."""
    array = sitk.GetArrayViewFromImage(label_map.image)
    values = np.zeros(array.shape, np.uint16)
    table = LabelTable()
    for label in label_map.labels:
        value = names.setdefault(label.name, len(names) + 1)
        colors.setdefault(label.name, label.color)
        values[array == label.value] = value
        table.add(value, label.name, colors[label.name])
    image = sitk.GetImageFromArray(values.astype(np.uint8) if len(names) < 256 else values)
    image.CopyInformation(label_map.image)
    return LabelMap(image, table)


def single_label(mask: sitk.Image, name: str, color: tuple[float, float, float] | None = None) -> LabelMap:
    """A 0/1 mask as a one-label label map called ``name``."""
    table = LabelTable()
    table.add(1, name, color)
    return LabelMap(sitk.Cast(mask > 0, sitk.sitkUInt8), table)


class SegToolkitSlicerLogic:
    """SegToolkit on a scene: each method returns the ids of the segments it wrote."""

    def __init__(self, scene) -> None:
        self.scene = scene
        self._preview: tuple[LabelMap, object] | None = None
        self.trained_models: list[Path] = []
        self.last_output = None

    # ------------------------------------------------------------------------------------------------ outputs
    def output_segmentation(self, volume, segmentation=None):
        """``segmentation``, or a new segmentation node on the volume's grid named after the volume."""
        if segmentation is not None:
            return segmentation
        return mrml.new_segmentation(self.scene, volume, f"{volume.GetName()} segmentation")

    def write(self, label_map: LabelMap, volume, segmentation=None, overwrite: bool = False) -> list[str]:
        """Write a label map (world LPS) into ``segmentation`` (created when None) and point it at the volume."""
        segmentation = self.output_segmentation(volume, segmentation)
        self.last_output = segmentation  # the node written last (a new one when none was given)
        ids = mrml.label_map_to_segments(label_map, segmentation, overwrite=overwrite)
        if volume is not None:
            segmentation.SetNodeReferenceID(segmentation.GetReferenceImageGeometryReferenceRole(), volume.GetID())
        return ids

    def import_dicom_seg(self, path: Path | str, volume=None, segmentation=None) -> list[str]:
        """Load a DICOM SEG into a segmentation node: frames placed by their positions (on ``volume``'s grid when
        given, else on the grid of the SEG's frames); overlapping segments stay overlapping segments."""
        from SegToolkitLib.io.images import read_label_layers

        reference = mrml.volume_to_sitk(volume) if volume is not None else None
        layers = read_label_layers(path, reference=reference)
        if segmentation is None:
            name = f"{Path(path).name.split('.')[0]} segmentation"
            segmentation = mrml.new_segmentation(self.scene, volume, name)
        ids: list[str] = []
        for layer in layers:  # segments of one layer never overlap; later layers add to the earlier ones
            ids += self.write(layer, volume, segmentation) if volume is not None else \
                mrml.label_map_to_segments(layer, segmentation)
        return ids

    def show_preview(self, label_map: LabelMap, volume):
        """Show a result in a separate preview segmentation node (replaced by every preview)."""
        node = self.scene.GetFirstNodeByName(PREVIEW_NODE_NAME)
        if node is None or not node.IsA("vtkMRMLSegmentationNode"):
            node = mrml.new_segmentation(self.scene, volume, PREVIEW_NODE_NAME)
        node.GetSegmentation().RemoveAllSegments()
        node.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        mrml.label_map_to_segments(label_map, node)
        self._preview = (label_map, volume)
        return node

    def apply_preview(self, segmentation=None, overwrite: bool = False) -> list[str]:
        """Write the last previewed result into ``segmentation`` and remove the preview node."""
        if self._preview is None:
            raise InputError("nothing to apply: press Preview first")
        label_map, volume = self._preview
        ids = self.write(label_map, volume, segmentation, overwrite)
        self.discard_preview()
        return ids

    def has_preview(self) -> bool:
        """True while a previewed result waits to be applied."""
        return self._preview is not None and self.scene.GetFirstNodeByName(PREVIEW_NODE_NAME) is not None

    def discard_preview(self) -> None:
        node = self.scene.GetFirstNodeByName(PREVIEW_NODE_NAME)
        if node is not None:
            self.scene.RemoveNode(node)
        self._preview = None

    # ----------------------------------------------------------------------------------------------- threshold
    def threshold_labels(self, volume, lower: float | None, upper: float | None, name: str = "Threshold",
                         **options) -> LabelMap:
        """Voxels with ``lower <= value <= upper`` as a one-label label map (options as in
        :func:`SegToolkitLib.methods.classic.threshold.threshold`, e.g. ``largest=True``, ``fill=True``)."""
        from SegToolkitLib.methods.classic.threshold import threshold

        return single_label(threshold(mrml.volume_to_sitk(volume), lower, upper, **options), name)

    def threshold(self, volume, lower: float | None, upper: float | None, segmentation=None, *,
                  overwrite: bool = False, **options) -> list[str]:
        """Segment by thresholding; see :meth:`threshold_labels`."""
        return self.write(self.threshold_labels(volume, lower, upper, **options), volume, segmentation, overwrite)

    # ------------------------------------------------------------------------------------------ region growing
    def region_growing_labels(self, volume, seeds, mode: str = "confidence", name: str = "Region",
                              competitors=None, multiplier: float = 2.5, lower: float | None = None,
                              upper: float | None = None, progress: ProgressCallback | None = None,
                              cancel: CancelToken | None = None) -> LabelMap:
        """Grow a region from the markups' points as a one-label label map.

        ``mode``: ``connected`` (intensity range ``lower``..``upper``, from the seed neighbourhood when not
        given), ``confidence`` (mean ± ``multiplier`` SD, re-estimated) or ``competitive`` (the seeds grow
        against the ``competitors`` markups' points, which stand for the surrounding tissue).
        """
        from SegToolkitLib.methods.classic import region_growing as growing

        image = mrml.volume_to_sitk(volume)
        points = _seed_points(seeds)
        if mode == "connected":
            mask = growing.connected_threshold(image, points, lower, upper, progress=progress, cancel=cancel)
        elif mode == "confidence":
            mask = growing.confidence_connected(image, points, multiplier=multiplier, progress=progress,
                                                cancel=cancel)
        elif mode == "competitive":
            if competitors is None:
                raise InputError("competitive growing: also place points in the surrounding tissue "
                                 "(competing seeds)")
            mask = growing.competitive_growing(image, {1: points, 0: _seed_points(competitors)},
                                               progress=progress, cancel=cancel)
        else:
            raise InputError(f"growing mode {mode!r}: choose one of {', '.join(growing.METHODS)}")
        return single_label(mask, name)

    def region_growing(self, volume, seeds, segmentation=None, *, overwrite: bool = False,
                       **options) -> list[str]:
        """Segment by region growing from the markups' points; see :meth:`region_growing_labels`."""
        return self.write(self.region_growing_labels(volume, seeds, **options), volume, segmentation, overwrite)

    # ---------------------------------------------------------------------------------------------- snakes
    def snake_session(self, volume, seeds, **options):
        """A :class:`SegToolkitLib.methods.classic.snakes.SnakeSession` started from the markups' points."""
        from SegToolkitLib.methods.classic.snakes import SnakeSession

        return SnakeSession(mrml.volume_to_sitk(volume), _seed_points(seeds), **options)

    def snake_labels(self, volume, seeds, iterations: int = 500, name: str = "Snake",
                     progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                     **options) -> LabelMap:
        """Evolve a snake from each seed until it converges (or ``iterations``) as a one-label label map."""
        from SegToolkitLib.methods.classic.snakes import snake

        mask = snake(mrml.volume_to_sitk(volume), _seed_points(seeds), iterations=iterations, progress=progress,
                     cancel=cancel, **options)
        return single_label(mask, name)

    def snake(self, volume, seeds, segmentation=None, *, overwrite: bool = False, **options) -> list[str]:
        """Segment with a snake grown from the markups' points; see :meth:`snake_labels`."""
        return self.write(self.snake_labels(volume, seeds, **options), volume, segmentation, overwrite)

    # ------------------------------------------------------------------------------ semi-automatic, as a job
    def semi_automatic_job(self, method: str, volume, seeds=None, *, name: str = "Segment", competitors=None,
                           apply: bool = False, segmentation=None, overwrite: bool = False, **options) -> Job:
        """Threshold (``options``: lower, upper), region growing (mode, multiplier, lower, upper) or snake
        (iterations, expansion, smoothness) as a :class:`Job`, so the GUI stays responsive and can cancel: the
        volume and points are read now (main thread); ``finish`` shows the result as the preview or, with
        ``apply``, writes it into ``segmentation`` (created then when None, so a cancelled job leaves no empty
        node; it is :attr:`last_output` afterwards)."""
        image = mrml.volume_to_sitk(volume)
        points = _seed_points(seeds) if method != "threshold" else []
        competitor_points = _seed_points(competitors) if competitors is not None else None

        def compute(progress: ProgressCallback, cancel: CancelToken) -> LabelMap:
            return single_label(_semi_automatic_mask(method, image, points, competitor_points, progress, cancel,
                                                     **options), name)

        def finish(label_map: LabelMap):
            self.show_preview(label_map, volume)
            return self.apply_preview(segmentation, overwrite) if apply else label_map

        return Job(f"{method} of {volume.GetName()}", compute, finish)

    # ------------------------------------------------------------------------------------------ measurements
    def measure(self, segmentation, volume=None, table=None, segment_ids: list[str] | None = None,
                progress: ProgressCallback | None = None, cancel: CancelToken | None = None):
        """Measure each segment (volume, diameters, RECIST, ellipsoid; intensity statistics when a volume is
        given, on its grid) into a table node (created when None) with one row per segment."""
        from SegToolkitLib.measurement.shape import measure

        ids = mrml.segment_ids(segmentation, segment_ids)
        label_map = mrml.segmentation_to_label_map(segmentation, volume, ids)
        image = mrml.volume_to_sitk(volume) if volume is not None else None
        report = measure(label_map, image, labels=range(1, len(ids) + 1), progress=progress, cancel=cancel)
        rows = [{"segment_id": segment_id, **row} for segment_id, row in zip(ids, report.rows())]
        if table is None:
            table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{segmentation.GetName()} measurements")
        mrml.rows_to_table(rows, table, ["segment_id"] + report.columns())
        return table

    @staticmethod
    def cut_off_segments(table) -> list[str]:
        """Names of the segments a measurement table flags as touching the scan's edge (volume a lower bound)."""
        return [str(row.get("name")) for row in mrml.table_to_rows(table) if row.get("warning")]

    def export_table_csv(self, table, path: str) -> None:
        """Save a measurement table as CSV."""
        mrml.write_table_csv(table, path)


    # ---------------------------------------------------------------------------------------------------- atlas
    def atlas_job(self, volume, atlases: Sequence[tuple] = (), segmentation=None, *, folder: Path | str | None = None,
                  transform: str = "auto", preset: str = "default", fusion: str = "auto", metric: str = "auto",
                  init: str = "auto", mask_margin_mm: float | str | None = "auto", overwrite: bool = False) -> Job:
        """Atlas segmentation of ``volume`` as a :class:`Job`: each (atlas volume, atlas segmentation) pair of the
        scene, and each case of ``folder`` (``images/``, ``labels/`` and ``dataset.json`` naming the labels), is
        registered onto the volume and its labels propagated and fused (``fusion``: majority, staple, weighted).
        The segments get the atlas segments' names and colours; atlases agree on labels by segment name.
        ``auto`` settings are chosen per atlas (same subject or another one, see SegToolkitLib's atlas strategy)."""
        from SegToolkitLib.methods.atlas import Atlas, RegistrationOptions, segment_with_atlases

        if not atlases and folder is None:
            raise InputError("no atlas given: select an atlas volume and its segmentation, or an atlas folder")
        target = mrml.volume_to_sitk(volume)  # MRML is read here, on the calling (main) thread
        scene_atlases = []
        for atlas_volume, atlas_segmentation in atlases:
            if atlas_volume is None or atlas_segmentation is None:
                raise InputError("atlas: each atlas needs both a volume and its segmentation")
            scene_atlases.append(Atlas(mrml.volume_to_sitk(atlas_volume),
                                       mrml.segmentation_to_label_map(atlas_segmentation, atlas_volume),
                                       atlas_volume.GetName()))
        folder_cases = _atlas_folder_cases(folder) if folder is not None else None
        options = RegistrationOptions(transform, preset, metric, init, "onehot", mask_margin_mm)

        def compute(progress: ProgressCallback, cancel: CancelToken) -> LabelMap:
            names: dict[str, int] = {}
            colors: dict[str, tuple] = {}
            loaded = scene_atlases + (_load_folder_atlases(*folder_cases) if folder_cases else [])
            for atlas in loaded:
                atlas.labels = renumbered_by_name(atlas.labels, names, colors)
            result = segment_with_atlases(target, loaded, fusion, options, progress=progress, cancel=cancel,
                                          target_name=volume.GetName())
            return result.label_map

        def finish(label_map: LabelMap) -> list[str]:
            return self.write(label_map, volume, segmentation, overwrite)

        return Job(f"atlas segmentation of {volume.GetName()}", compute, finish)

    def atlas(self, volume, atlases: Sequence[tuple] = (), segmentation=None, *,
              progress: ProgressCallback | None = None, cancel: CancelToken | None = None, **options) -> list[str]:
        """Atlas segmentation run synchronously (Python console); see :meth:`atlas_job`."""
        return run_job(self.atlas_job(volume, atlases, segmentation, **options), progress, cancel)

    # ----------------------------------------------------------------------------------------------------- deep
    def models(self, folders: Iterable[Path | str] = ()) -> list[ModelInfo]:
        """Installed models (model folders inside ``folders``) and the models trained in this session."""
        return find_models([*folders, *self.trained_models])

    def predict_job(self, volume, model_dir: Path | str, segmentation=None, *, device: str = "auto",
                    tta: bool = False, largest_component: bool = False, extra_channels: Sequence = (),
                    overwrite: bool = False, classes: Sequence[str] | None = None) -> Job:
        """Deep-learning segmentation of ``volume`` (plus ``extra_channels`` volumes for multi-channel models) with
        a model (a SegToolkit model folder, an nnU-Net model folder or zip, or a store model by name) as a
        :class:`Job`; segments get the model's class names and colours. ``tta``: accurate mode (mirrored test-time
        augmentation), slower; off = the model's default (on for 2D models, and for nnU-Net models trained with
        mirroring). ``classes``: class names to segment (nnU-Net models and tasks; a task runs only the parts
        needed)."""
        from SegToolkitLib.methods.deep import require_deep
        from SegToolkitLib.methods.deep.formats.loading import detect_format
        from SegToolkitLib.methods.deep.store import resolve_model

        require_deep()
        try:
            model_dir = resolve_model(model_dir)
            detect_format(model_dir)
        except InputError as error:
            raise InputError(f"{model_dir}: not a SegToolkit model folder, nnU-Net model or store model ({error}); "
                             "pick a model from the list, import or train one") from None
        channels = [mrml.volume_to_sitk(node) for node in (volume, *extra_channels)]

        def compute(progress: ProgressCallback, cancel: CancelToken) -> LabelMap:
            from SegToolkitLib.methods.deep.formats.loading import open_model, predict_any
            from SegToolkitLib.progress import scaled

            model = open_model(model_dir, device=device, progress=scaled(progress, 0.0, 0.05), cancel=cancel)
            return predict_any(model, channels, classes=list(classes) if classes else None,
                               tta=True if tta else None, largest_component=largest_component, device=device,
                               name=volume.GetName(), progress=scaled(progress, 0.05, 1.0),
                               cancel=cancel).label_map

        def finish(label_map: LabelMap) -> list[str]:
            return self.write(label_map, volume, segmentation, overwrite)

        return Job(f"{model_dir.name} on {volume.GetName()}", compute, finish)

    def download_model_job(self, name: str) -> Job:
        """Download a catalog model into the store (verified; resumed when a partial download is there) as a
        :class:`Job` (progress and cancel like every job); ``finish`` returns its store folder."""
        from SegToolkitLib.methods.deep.catalog import CATALOG

        if name not in CATALOG:
            raise InputError(f"{name}: not a model of the catalog; import it instead")

        def compute(progress: ProgressCallback, cancel: CancelToken) -> Path:
            from SegToolkitLib.methods.deep.store import fetch

            return fetch(name, progress, cancel)

        return Job(f"download {name}", compute, lambda path: path)

    def import_model_job(self, path: Path | str, name: str | None = None) -> Job:
        """Import a model folder or zip carried in by hand (SegToolkit, nnU-Net, TotalSegmentator) into the store as
        a :class:`Job`; ``finish`` returns its store folder."""
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: not found; choose a model folder or zip file")

        def compute(progress: ProgressCallback, cancel: CancelToken) -> Path:
            from SegToolkitLib.methods.deep.store import import_model

            return import_model(path, name, progress, cancel)

        return Job(f"import {path.name}", compute, lambda folder: folder)

    def predict(self, volume, model_dir: Path | str, segmentation=None, *, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None, **options) -> list[str]:
        """Deep-learning segmentation run synchronously (Python console); see :meth:`predict_job`."""
        return run_job(self.predict_job(volume, model_dir, segmentation, **options), progress, cancel)

    def build_training_dataset(self, pairs: Sequence[tuple], folder: Path | str, modality: str = "") -> Path:
        """Write (volume, segmentation) pairs as a training dataset folder: ``images/caseNNN.nrrd``,
        ``labels/caseNNN.nrrd`` (on the volume's grid) and ``dataset.json`` (label names and colours; the same
        segment name has the same value in every case). ``modality`` "CT" selects CT intensity normalisation."""
        if not pairs:
            raise InputError("training needs at least one volume with its segmentation")
        folder = Path(folder)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        names: dict[str, int] = {}
        colors: dict[str, tuple] = {}
        cases = []
        for number, (volume, segmentation) in enumerate(pairs):
            if volume is None or segmentation is None:
                raise InputError("training: each case needs both a volume and its segmentation")
            label_map = renumbered_by_name(mrml.segmentation_to_label_map(segmentation, volume), names, colors)
            case = f"case{number:03d}"
            sitk.WriteImage(mrml.volume_to_sitk(volume), str(folder / "images" / f"{case}.nrrd"))
            sitk.WriteImage(label_map.image, str(folder / "labels" / f"{case}.nrrd"))
            cases.append({"name": case, "volume": volume.GetName(), "segmentation": segmentation.GetName()})
        table = LabelTable()
        for name, value in names.items():
            table.add(value, name, colors[name])
        meta = {"modality": modality, "labels": table.to_json_dict(), "sources": cases}
        (folder / "dataset.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return folder

    def train_job(self, pairs: Sequence[tuple], output_dir: Path | str, time_budget_minutes: float | None = 30.0, *,
                  modality: str = "", device: str = "auto", epochs: int | None = None,
                  iterations_per_epoch: int | None = None, plan: dict | None = None) -> Job:
        """Train a model on (volume, segmentation) pairs of the scene as a :class:`Job`: the dataset folder is
        written now (main thread) into a temporary folder, training runs in ``compute`` until the time budget (or
        ``epochs``) is used, and ``finish`` adds the model in ``output_dir`` to :meth:`models`."""
        from SegToolkitLib.methods.deep import require_deep

        require_deep()
        output_dir = Path(output_dir)
        if (output_dir / MODEL_JSON).is_file():
            raise InputError(f"{output_dir}: already holds a model; choose a new model name or folder")
        if time_budget_minutes is None and epochs is None:
            raise InputError("training: give a time budget (minutes) or a number of epochs")
        dataset_dir = Path(tempfile.mkdtemp(prefix="segtoolkit-train-"))
        try:
            self.build_training_dataset(pairs, dataset_dir, modality)
        except BaseException:
            shutil.rmtree(dataset_dir, ignore_errors=True)
            raise

        def compute(progress: ProgressCallback, cancel: CancelToken) -> dict:
            from SegToolkitLib.methods.deep.training import TrainingOptions, train

            options = TrainingOptions(epochs=epochs, time_budget_minutes=time_budget_minutes,
                                      iterations_per_epoch=iterations_per_epoch, device=device)
            try:
                return train(dataset_dir, output_dir, plan, options, progress, cancel)
            finally:
                shutil.rmtree(dataset_dir, ignore_errors=True)

        def finish(summary: dict) -> ModelInfo:
            self.trained_models.append(output_dir)
            return find_models([output_dir])[0]

        return Job(f"training {output_dir.name}", compute, finish)

    def train(self, pairs: Sequence[tuple], output_dir: Path | str, time_budget_minutes: float | None = 30.0, *,
              progress: ProgressCallback | None = None, cancel: CancelToken | None = None, **options) -> ModelInfo:
        """Train synchronously (Python console); see :meth:`train_job`."""
        return run_job(self.train_job(pairs, output_dir, time_budget_minutes, **options), progress, cancel)


def _atlas_folder_cases(folder: Path | str) -> tuple[list, LabelTable]:
    """The (image, label map) files of an atlas folder in the dataset layout, and its label names."""
    from SegToolkitLib.methods.deep.dataset import load_dataset

    dataset = load_dataset(folder)
    if not dataset.cases:
        raise InputError(f"{folder}: no atlas found; put images in images/ and label maps of the same name in "
                         "labels/, with a dataset.json naming the labels")
    return [(case.images[0], case.label) for case in dataset.cases], dataset.labels


def _load_folder_atlases(cases: list, labels: LabelTable) -> list:
    from SegToolkitLib.methods.atlas import load_atlas

    return [load_atlas(image, label, labels) for image, label in cases]


def _semi_automatic_mask(method: str, image: sitk.Image, points: list, competitors: list | None,
                         progress: ProgressCallback, cancel: CancelToken, **options) -> sitk.Image:
    """The mask of one semi-automatic method on plain images and points (no MRML: runs on a worker thread)."""
    from SegToolkitLib.methods.classic import region_growing as growing
    from SegToolkitLib.methods.classic.snakes import snake
    from SegToolkitLib.methods.classic.threshold import threshold

    if method == "threshold":
        cancel.raise_if_cancelled()
        return threshold(image, options.get("lower"), options.get("upper"))
    if method == "snake":
        return snake(image, points, progress=progress, cancel=cancel, **options)
    if method != "region growing":
        raise InputError(f"method {method!r}: choose threshold, region growing or snake")
    mode = options.get("mode", "confidence")
    if mode == "connected":
        return growing.connected_threshold(image, points, options.get("lower"), options.get("upper"),
                                           progress=progress, cancel=cancel)
    if mode == "confidence":
        return growing.confidence_connected(image, points, multiplier=options.get("multiplier", 2.5),
                                            progress=progress, cancel=cancel)
    if mode == "competitive":
        if competitors is None:
            raise InputError("competitive growing: also place points in the surrounding tissue (competing seeds)")
        return growing.competitive_growing(image, {1: points, 0: competitors}, progress=progress, cancel=cancel)
    raise InputError(f"growing mode {mode!r}: choose one of {', '.join(growing.METHODS)}")


def _seed_points(seeds) -> list[tuple[float, float, float]]:
    """World LPS points from a markups node or a sequence of LPS points."""
    if seeds is None:
        raise InputError("no seed points: place at least one point inside the structure")
    if hasattr(seeds, "GetNumberOfControlPoints"):
        points = mrml.markups_to_lps(seeds)
        if not points:
            raise InputError(f"{seeds.GetName()}: has no control points; place at least one point inside the "
                             "structure")
        return points
    return [tuple(float(v) for v in point) for point in np.reshape(np.asarray(seeds, float), (-1, 3))]
