"""Atlas segmentation: registration (rigid, affine, B-spline, diffeomorphic demons), label propagation and
multi-atlas label fusion (majority voting, STAPLE, locally weighted voting), settings chosen for same-subject or
between-subject atlases (strategy) and labels adapted to the target's intensities (refinement)."""

from .fusion import FUSION_METHODS, fuse_labels, majority_vote, staple, weighted_vote
from .multi_atlas import (
                          Atlas,
                          AtlasSegmentation,
                          PropagatedAtlas,
                          RegistrationOptions,
                          check_atlas,
                          fuse_propagated,
                          label_dice,
                          load_atlas,
                          propagate_atlas,
                          segment_with_atlases,
)
from .propagation import INTERPOLATIONS, propagate_labels, warp_labels
from .refinement import Refinement, refine_with_intensities
from .registration import (
                          INITIALISATIONS,
                          METRICS,
                          PRESETS,
                          TRANSFORM_TYPES,
                          RegistrationResult,
                          StageResult,
                          check_overlap,
                          check_registrable,
                          initial_transform,
                          load_transform,
                          register,
                          resample_image,
                          save_transform,
)
from .strategy import AUTO, AtlasPlan, PairCheck, compare_images, plan_registration

__all__ = [
    "AUTO", "AtlasPlan", "PairCheck", "Refinement", "check_registrable", "compare_images", "plan_registration",
    "refine_with_intensities", "FUSION_METHODS", "INITIALISATIONS", "INTERPOLATIONS", "METRICS", "PRESETS",
    "TRANSFORM_TYPES", "Atlas",
    "AtlasSegmentation", "PropagatedAtlas", "RegistrationOptions", "RegistrationResult", "StageResult",
    "check_atlas", "check_overlap", "fuse_propagated", "fuse_labels",
    "initial_transform", "label_dice", "load_atlas", "load_transform",
    "majority_vote", "propagate_atlas", "propagate_labels", "register", "resample_image", "save_transform",
    "segment_with_atlases", "staple", "warp_labels", "weighted_vote",
]
