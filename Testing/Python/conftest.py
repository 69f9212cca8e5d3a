"""Shared pytest fixtures: the built-in phantom, the optional shared data folder, and a real Slicer MRML context
(``slicer-core`` wheel) for the Slicer logic tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_ENV = "SEGTOOLKIT_DATA"


def shared_data_dir() -> Path:
    """Public test data: ``$SEGTOOLKIT_DATA``, default ``../shared/data`` next to the repository."""
    default = Path(__file__).resolve().parents[3] / "shared" / "data"
    return Path(os.environ.get(DATA_ENV, default))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; tests using it are skipped when it is absent."""
    folder = shared_data_dir()
    if not (folder / "datasets_index.json").is_file():
        pytest.skip(f"shared data not found at {folder} (set {DATA_ENV})")
    return folder


@pytest.fixture(scope="session")
def slicer_core():
    """One real MRML application context for the session (see Testing/Python/slicer_context.py)."""
    pytest.importorskip("slicer")
    from slicer_context import SlicerCoreContext

    return SlicerCoreContext()


@pytest.fixture
def mrml(slicer_core):
    """The Slicer context with an empty scene; cleared after the test."""
    import slicer

    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer_core.scene)
    yield slicer_core
    slicer_core.scene.Clear(0)


@pytest.fixture
def torch_one_thread():
    """Tiny networks run fastest (and steadiest on a shared machine) on one torch thread."""
    torch = pytest.importorskip("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
