"""The original toolkit's networks, rebuilt in PyTorch so its Keras weights can be imported and trained further."""

from __future__ import annotations

from bodycomp_cli.nets.bridge_densenet import BridgeDenseNet
from bodycomp_cli.nets.bridge_unet import BridgeUNet

# Architectures the tasks build besides smp's and timm's; each takes the task's class/level count first,
# then in_channels, then the options recorded under "arch_options" in config.json.
SEGMENTATION_NETS = {"bridge-unet": BridgeUNet}
SELECTION_NETS = {"bridge-densenet": BridgeDenseNet}
