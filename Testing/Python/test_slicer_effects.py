"""The Qt-free core of the Snake and Region growing Segment Editor effects, run through Slicer's own Segment
Editor logic (vtkSlicerSegmentEditorLogic, the C++ path the effects' Apply uses) on real MRML nodes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer")

import SimpleITK as sitk  # noqa: E402
import slicer  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "SegToolkit" / "SegToolkit"))

from SegToolkitSlicerLib import effects  # noqa: E402
from SegToolkitSlicerLib import mrml as adapter  # noqa: E402
from test_slicer_logic import ball_image, oblique_direction, scene_volume, segment_array  # noqa: E402

from SegToolkitLib.errors import InputError  # noqa: E402


def editor_for(mrml, geometry="oblique"):
    image, truth, inside = ball_image(oblique_direction() if geometry == "oblique" else None)
    volume = scene_volume(mrml.scene, image, geometry)
    segmentation = adapter.new_segmentation(mrml.scene, volume)
    editor = slicer.vtkSlicerSegmentEditorLogic()
    editor.SetMRMLScene(mrml.scene)
    editor.SetSegmentEditorNode(mrml.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode"))
    editor.SetSegmentationNode(segmentation)
    editor.SetSourceVolumeNode(volume)
    assert editor.UpdateAlignedSourceVolume()
    return editor, segmentation, volume, truth, inside


def apply_mask(editor, segmentation, segment_id, mask):
    """What the effects' Apply does: save undo state, fill the modifier, modify the selected segment."""
    editor.SetCurrentSegmentID(segment_id)
    editor.SaveStateForUndo()
    assert editor.ResetModifierLabelmapToDefault()
    modifier = editor.GetModifierLabelmap()
    modifier.DeepCopy(effects.mask_to_oriented_image(mask, editor.GetAlignedSourceVolume()))
    editor.ModifySegmentByLabelmap(segmentation, segment_id, modifier,
                                   slicer.vtkSlicerSegmentEditorLogic.ModificationModeAdd, True, False)


@pytest.mark.parametrize("geometry", ["oblique", "transformed"])
def test_snake_effect_session_applies_with_undo(mrml, geometry):
    editor, segmentation, volume, truth, inside = editor_for(mrml, geometry)
    segment_id = segmentation.GetSegmentation().AddEmptySegment("ball")
    session = effects.SnakeEffectSession(editor.GetAlignedSourceVolume())
    with pytest.raises(InputError, match="no bubbles"):
        session.step(1)
    extent = editor.GetAlignedSourceVolume().GetExtent()
    session.add_bubble((inside[0] + extent[0], inside[1] + extent[2], inside[2] + extent[4]))
    first = sitk.GetArrayFromImage(session.step(1)) > 0
    for _ in range(40):
        mask = session.step(5)
        if session.converged:
            break
    grown = sitk.GetArrayFromImage(mask) > 0
    assert first[inside[::-1]] and grown.sum() > first.sum()
    apply_mask(editor, segmentation, segment_id, mask)
    np.testing.assert_array_equal(segment_array(segmentation, segment_id, volume), grown)
    editor.Undo()
    assert not segment_array(segmentation, segment_id, volume).any()


def test_snake_click_outside_is_refused(mrml):
    editor, *_ = editor_for(mrml)
    session = effects.SnakeEffectSession(editor.GetAlignedSourceVolume())
    with pytest.raises(InputError, match="outside the source volume"):
        session.add_bubble((500, 0, 0))


@pytest.mark.parametrize("mode", ["connected", "confidence"])
def test_grow_from_clicks_matches_segtoolkitlib(mrml, mode):
    from SegToolkitLib.methods.classic import region_growing as growing

    editor, segmentation, volume, truth, inside = editor_for(mrml)
    source = editor.GetAlignedSourceVolume()
    mask = effects.grow_from_clicks(source, [inside], mode=mode)
    image = adapter.volume_to_sitk(volume)
    function = growing.connected_threshold if mode == "connected" else growing.confidence_connected
    direct = function(image, [inside], ijk=True)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(direct))


def test_grow_from_segments_competitive(mrml):
    editor, segmentation, volume, truth, inside = editor_for(mrml, "transformed")
    source = editor.GetAlignedSourceVolume()
    ball_id = segmentation.GetSegmentation().AddEmptySegment("ball")
    outside_id = segmentation.GetSegmentation().AddEmptySegment("outside")
    ball_seed = np.zeros(truth.shape, np.uint8)
    k, j, i = inside[::-1]
    ball_seed[k - 1:k + 2, j - 2:j + 3, i - 2:i + 3] = 1
    outside_seed = np.zeros(truth.shape, np.uint8)
    outside_seed[:, :3, :3] = 1
    apply_mask(editor, segmentation, ball_id, ball_seed)
    apply_mask(editor, segmentation, outside_id, outside_seed)
    np.testing.assert_array_equal(effects.segment_mask(segmentation, ball_id, source), ball_seed > 0)
    grown = effects.grow_from_segments(source, segmentation, [ball_id, outside_id])
    dice = 2 * (grown[ball_id] & truth).sum() / (grown[ball_id].sum() + truth.sum())
    assert dice > 0.9
    assert not (grown[ball_id] & grown[outside_id]).any()
    with pytest.raises(InputError, match="at least two segments"):
        effects.grow_from_segments(source, segmentation, [ball_id])


def test_mask_to_oriented_image_keeps_extent_and_geometry(mrml):
    editor, *_ = editor_for(mrml)
    source = editor.GetAlignedSourceVolume()
    dims = source.GetDimensions()
    mask = np.zeros(dims[::-1], np.uint8)
    mask[2, 3, 4] = 1
    image = effects.mask_to_oriented_image(mask, source)
    assert image.GetExtent() == source.GetExtent()
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])
    np.testing.assert_array_equal(values, mask)
    with pytest.raises(InputError, match="does not fit"):
        effects.mask_to_oriented_image(np.zeros((1, 2, 3)), source)


def test_snake_effect_settings_describe_and_feature_preview(mrml):
    editor, segmentation, volume, truth, inside = editor_for(mrml)
    source = editor.GetAlignedSourceVolume()
    session = effects.SnakeEffectSession(source, model="geodesic", feature="auto", expansion=None)
    extent = source.GetExtent()
    session.add_bubble((inside[0] + extent[0], inside[1] + extent[2], inside[2] + extent[4]))
    settings = session.describe()
    assert settings["feature"] == "region" and "homogeneous" in settings["choice"]
    lower, upper = settings["intensity_range"]
    feature = session.feature_image()
    values = sitk.GetArrayFromImage(feature)
    assert values.min() >= -1.0 and values.max() <= 1.0 and values.max() > 0.5  # region probability
    point = feature.TransformPhysicalPointToIndex(session.image.TransformIndexToPhysicalPoint(
        effects.array_index((inside[0] + extent[0], inside[1] + extent[2], inside[2] + extent[4]), source)))
    assert feature.GetPixel(point) > 0.5  # the click lies inside the range
    # the user narrows the range to nothing around the click: the contour restarts and cannot grow
    session.set_options(feature="region", intensity_range=(upper + 100.0, upper + 200.0))
    assert session.describe()["intensity_range"] == (upper + 100.0, upper + 200.0)
    assert sitk.GetArrayFromImage(session.feature_image()).max() < 0
    session.set_options(feature="edge", edge_strength=5.0)
    assert session.describe()["edge_strength"] == 5.0 and session.iteration == 0
