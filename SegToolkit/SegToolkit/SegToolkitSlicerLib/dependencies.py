"""Install SegToolkit's Python dependencies inside Slicer on first use, after the user agrees.

* Packages of ``Resources/requirements.txt`` (scipy, scikit-image...) through Slicer's own pip helper:
  ``slicer.packaging.pip_ensure`` (Slicer 5.12+: checks, asks, shows progress, offers a restart) or, in older
  releases, ``slicer.util.pip_install`` after a confirmation dialog.
* Slicer's own numpy, SimpleITK and vtk (and torch, which belongs to the PyTorch extension) are never installed
  or upgraded by pip: those lines are dropped and pip is told to leave them alone.

* ``requirements.txt`` has groups: lines before any ``# [name]`` header are the core packages, installed when
  the module is first used; the ``# [deep]`` group (MONAI...) only when the Deep section is.
* torch through the PyTorch extension (``PyTorchUtils``), which picks the CUDA or CPU build for this machine.

Runs only inside the Slicer application (the functions use ``slicer.util`` dialogs); nothing happens at import.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

PROTECTED = ("numpy", "SimpleITK", "vtk", "torch", "torchvision")  # owned by Slicer / the PyTorch extension
IMPORT_NAMES = {"scikit-image": "skimage"}


GROUP_HEADER = re.compile(r"^#\s*\[(?P<group>[\w-]+)\]")


def requirements_path() -> Path:
    """The SegToolkit module's ``Resources/requirements.txt`` (next to this package, in the source tree and once
    installed in ``qt-scripted-modules``)."""
    return Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"


def read_requirements(path: Path | str, group: str = "core") -> list[str]:
    """Requirement lines of one group of the file (``core``: those before any ``# [group]`` header), protected
    packages removed."""
    lines = []
    current = "core"
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        header = GROUP_HEADER.match(line.strip())
        if header:
            current = header.group("group")
            continue
        line = line.split("#", 1)[0].strip()
        if line and current == group and _package_name(line) not in PROTECTED:
            lines.append(line)
    return lines


def missing(requirements: list[str]) -> list[str]:
    """Requirements whose package cannot be imported at all (version checks are left to pip)."""
    return [line for line in requirements
            if importlib.util.find_spec(IMPORT_NAMES.get(_package_name(line), _package_name(line))) is None]


def ensure_requirements(path: Path | str, requester: str = "SegToolkit", group: str = "core") -> bool:
    """Make sure the group's packages are installed; True when they are usable now."""
    import slicer

    requirements = read_requirements(path, group)
    if not missing(requirements):
        return True
    try:
        from slicer import packaging  # Slicer 5.12+
    except ImportError:
        packaging = None
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        try:  # asks first, skips in --testing, offers a restart when an imported package changed
            packaging.pip_ensure(requirements, skip_packages=list(PROTECTED), requester=requester)
        except RuntimeError:  # raised when the user declines the installation
            return False
        return not missing(requirements)
    needed = missing(requirements)
    if not slicer.util.confirmOkCancelDisplay(
            f"{requester} needs these Python packages, which will be downloaded and installed now:\n\n"
            + "\n".join(needed), windowTitle=f"{requester}: install Python packages"):
        return False
    _pip_install(needed)
    return not missing(requirements)


def ensure_torch(requester: str = "SegToolkit", minimum: str = "2.0") -> bool:
    """Make sure torch is importable, installing it through the PyTorch extension after the user agrees."""
    import slicer

    try:
        import PyTorchUtils
    except ImportError:
        slicer.util.errorDisplay(f"{requester}: deep learning needs the PyTorch extension. Install 'PyTorch' from "
                                 "the Extensions Manager, restart Slicer and try again.")
        return False
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if torch_logic.torchInstalled():
        return True
    if not slicer.util.confirmOkCancelDisplay(
            f"{requester} needs PyTorch for deep learning. Download and install it now (about 1-3 GB; the PyTorch "
            "extension picks the GPU or CPU build for this computer)?", windowTitle=f"{requester}: install PyTorch"):
        return False
    torch = torch_logic.installTorch(askConfirmation=False, torchVersionRequirement=f">={minimum}")
    return torch is not None


def ensure_deep(path: Path | str, requester: str = "SegToolkit") -> bool:
    """torch (PyTorch extension), then the ``deep`` group of the requirements (MONAI, safetensors)."""
    return ensure_torch(requester) and ensure_requirements(path, requester, group="deep")


def _pip_install(requirements: list[str]) -> None:
    """Install without letting pip replace Slicer's packages (``skip_packages``, Slicer 5.12+)."""
    import slicer

    try:
        slicer.util.pip_install(requirements, skip_packages=list(PROTECTED))
    except TypeError:  # Slicer < 5.12: no skip_packages; pip's default strategy keeps satisfied numpy as it is
        slicer.util.pip_install(requirements)


def _package_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip()
