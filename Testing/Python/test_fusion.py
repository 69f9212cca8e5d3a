"""Label fusion on hand-made votes: majority (with defined ties), STAPLE, locally weighted voting."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SegToolkitLib.errors import InputError
from SegToolkitLib.methods.atlas import fuse_labels, majority_vote, staple, weighted_vote


def image(array) -> sitk.Image:
    result = sitk.GetImageFromArray(np.asarray(array, dtype=np.uint8))
    result.SetSpacing((0.5, 2.0))
    return result


def values(result: sitk.Image) -> list:
    return sitk.GetArrayFromImage(result).tolist()


def test_majority_vote_and_its_tie_rule():
    votes = [image([[0, 1, 2, 3]]), image([[0, 1, 2, 2]]), image([[1, 2, 1, 0]])]
    assert values(majority_vote(votes)) == [[0, 1, 2, 0]]  # last voxel: 3/2/0 tie -> lowest value (0)
    two = [image([[1, 3, 0]]), image([[3, 1, 2]])]
    assert values(majority_vote(two)) == [[1, 1, 0]]
    fused = majority_vote(votes)
    assert fused.GetSpacing() == (0.5, 2.0)


def test_staple_on_consistent_raters_returns_their_consensus():
    rng = np.random.default_rng(3)
    truth = np.zeros((20, 20), dtype=np.uint8)
    truth[4:16, 3:12] = 1
    truth[6:14, 12:18] = 2
    raters = []
    for _ in range(5):
        noisy = truth.copy()
        flips = rng.random(truth.shape) < 0.03
        noisy[flips] = rng.integers(0, 3, int(flips.sum()))
        raters.append(image(noisy))
    result = sitk.GetArrayFromImage(staple(raters))
    assert np.mean(result == truth) > 0.99
    identical = [image(truth)] * 3
    assert np.array_equal(sitk.GetArrayFromImage(fuse_labels(identical, "staple")), truth)


def test_weighted_voting_prefers_the_atlas_that_matches_the_target():
    target = np.zeros((30, 30), dtype=np.float32)
    target[:, 15:] = 100.0  # the boundary in the target is at column 15
    good_image, bad_image = target.copy(), np.zeros_like(target)
    bad_image[:, 22:] = 100.0
    good_labels, bad_labels = (target > 0).astype(np.uint8), (bad_image > 0).astype(np.uint8)

    def as_image(array):
        result = sitk.GetImageFromArray(array)
        result.SetSpacing((0.5, 2.0))
        return result

    labels = [as_image(bad_labels), as_image(good_labels)]
    atlases = [as_image(bad_image), as_image(good_image)]
    fused = sitk.GetArrayFromImage(weighted_vote(labels, atlases, as_image(target), sigma_mm=2.0))
    assert np.array_equal(fused, good_labels)
    assert not np.array_equal(sitk.GetArrayFromImage(majority_vote(labels)), good_labels)  # the tie went elsewhere


def test_fusion_refuses_bad_input():
    with pytest.raises(InputError, match="grid"):
        majority_vote([image([[0, 1]]), image([[0, 1, 1]])])
    with pytest.raises(InputError, match="unknown fusion"):
        fuse_labels([image([[0, 1]])], "mean")
    with pytest.raises(InputError, match="weighted fusion needs"):
        fuse_labels([image([[0, 1]]), image([[1, 1]])], "weighted")
