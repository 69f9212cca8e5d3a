"""Segmentation networks by name, built from the plan's topology.

* ``dynunet``  - MONAI DynUNet (nnU-Net's U-Net) with deep supervision, 2D or 3D.
* ``resenc``   - the same with residual encoder/decoder blocks.
* ``dilated``  - context by dilated convolutions at full resolution, no pooling (a small network of our own).
* ``swinunetr`` - MONAI SwinUNETR (a shifted-window transformer encoder with a convolutional decoder).

In training mode every network returns a list of logits ``[full resolution, deeper supervision heads...]``
all at the input size; in evaluation mode it returns the full-resolution logits only.
torch and MONAI are imported here, so import this module lazily.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import InputError

NETWORKS = ("dynunet", "resenc", "dilated", "swinunetr")
# Parameter-name prefixes of each network's encoder (frozen by --freeze-encoder).
ENCODER_PREFIXES = {
    "dynunet": ("input_block.", "downsamples.", "bottleneck."),
    "resenc": ("input_block.", "downsamples.", "bottleneck."),
    "dilated": ("stem.", "encoder."),
    "swinunetr": ("swinViT.", "encoder1.", "encoder2.", "encoder3.", "encoder4.", "encoder10."),
}


def network_patch_size(name: str, patch: list[int]) -> list[int]:
    """The patch a network can take: SwinUNETR needs multiples of 32, at least 64."""
    if name == "swinunetr":
        return [max(64, int(round(p / 32)) * 32) for p in patch]
    return list(patch)


def network_spec(name: str, plan: dict, in_channels: int, out_channels: int) -> dict:
    """Everything needed to rebuild the network (stored in model.json); per-axis lists in array order."""
    if name not in NETWORKS:
        raise InputError(f"network {name!r}: choose one of {', '.join(NETWORKS)}")
    net = plan["network"]
    return {"name": name, "spatial_dims": 2 if plan["configuration"] == "2d" else 3,
            "in_channels": in_channels, "out_channels": out_channels,
            "kernels": [list(reversed(k)) for k in net["kernels"]],
            "strides": [list(reversed(s)) for s in net["strides"]], "filters": list(net["filters"])}


def build_network(spec: dict) -> nn.Module:
    """A freshly initialised network from a :func:`network_spec` dictionary."""
    name = spec["name"]
    if name in ("dynunet", "resenc"):
        return SupervisedDynUNet(spec, residual=name == "resenc")
    if name == "dilated":
        return DilatedNet(spec["spatial_dims"], spec["in_channels"], spec["out_channels"],
                          width=min(64, 2 * spec["filters"][0]))
    if name == "swinunetr":
        from monai.networks.nets import SwinUNETR

        return _EvalSingle(SwinUNETR(in_channels=spec["in_channels"], out_channels=spec["out_channels"],
                                     feature_size=12 if spec["filters"][0] <= 16 else 24,
                                     spatial_dims=spec["spatial_dims"]))
    raise InputError(f"network {name!r}: choose one of {', '.join(NETWORKS)}")


def encoder_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    """The encoder's parameters (for freezing during transfer learning)."""
    prefixes = ENCODER_PREFIXES[name]
    return [p for key, p in model.named_parameters() if _strip(key).startswith(prefixes)]


def _strip(key: str) -> str:
    return key.split("net.", 1)[1] if key.startswith("net.") else key


class SupervisedDynUNet(nn.Module):
    """MONAI DynUNet with deep supervision; returns a list of logits in training mode."""

    def __init__(self, spec: dict, residual: bool) -> None:
        super().__init__()
        from monai.networks.nets import DynUNet

        stages = len(spec["strides"])
        self.supervision = max(0, min(2, stages - 2))
        self.net = DynUNet(spec["spatial_dims"], spec["in_channels"], spec["out_channels"],
                           kernel_size=spec["kernels"], strides=spec["strides"],
                           upsample_kernel_size=spec["strides"][1:], filters=spec["filters"],
                           norm_name=("INSTANCE", {"affine": True}), deep_supervision=self.supervision > 0,
                           deep_supr_num=max(1, self.supervision), res_block=residual)

    def forward(self, x: torch.Tensor):
        out = self.net(x)
        if self.training and self.supervision > 0:
            return list(torch.unbind(out, dim=1))
        return [out] if self.training else out


class _EvalSingle(nn.Module):
    """Wraps a single-output network so it follows the list-in-training convention."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        out = self.net(x)
        return [out] if self.training else out


class DilatedNet(nn.Module):
    """Full-resolution network whose context comes from dilated 3x3(x3) convolutions (no pooling): a stem,
    residual blocks with dilations 1, 2, 4, 8, 16 and back down, and a 1x1 classifier."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, width: int = 32,
                 dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 8, 4, 2, 1)) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        norm = nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d
        self.stem = nn.Sequential(conv(in_channels, width, 3, padding=1), norm(width, affine=True),
                                  nn.LeakyReLU(0.01, inplace=True))
        half = math.ceil(len(dilations) / 2)
        blocks = [_DilatedBlock(conv, norm, width, d) for d in dilations]
        self.encoder = nn.Sequential(*blocks[:half])
        self.decoder = nn.Sequential(*blocks[half:])
        self.head = conv(width, out_channels, 1)

    def forward(self, x: torch.Tensor):
        out = self.head(self.decoder(self.encoder(self.stem(x))))
        return [out] if self.training else out


class _DilatedBlock(nn.Module):
    def __init__(self, conv, norm, width: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(width, width, 3, padding=dilation, dilation=dilation),
                                  norm(width, affine=True), nn.LeakyReLU(0.01, inplace=True),
                                  conv(width, width, 3, padding=1), norm(width, affine=True))
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))
