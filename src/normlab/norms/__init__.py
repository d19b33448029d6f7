"""One file per method: its functional form, its module, its registry entry lives in
normlab.registry."""

from normlab.norms._base import Norm as Norm
from normlab.norms.batch_instance_norm import BatchInstanceNorm as BatchInstanceNorm
from normlab.norms.batch_norm import BatchNorm as BatchNorm
from normlab.norms.batch_renorm import BatchRenorm as BatchRenorm
from normlab.norms.evo_norm import EvoNormB0 as EvoNormB0
from normlab.norms.evo_norm import EvoNormS0 as EvoNormS0
from normlab.norms.frozen_batch_norm import FrozenBatchNorm as FrozenBatchNorm
from normlab.norms.ghost_batch_norm import GhostBatchNorm as GhostBatchNorm
from normlab.norms.group_norm import GroupNorm as GroupNorm
from normlab.norms.instance_norm import InstanceNorm as InstanceNorm
from normlab.norms.layer_norm import LayerNorm as LayerNorm
from normlab.norms.rms_norm import RMSNorm as RMSNorm
from normlab.norms.switchable_norm import SwitchableNorm as SwitchableNorm
from normlab.norms.virtual_batch_norm import VirtualBatchNorm as VirtualBatchNorm

__all__ = [
    "BatchInstanceNorm",
    "BatchNorm",
    "BatchRenorm",
    "EvoNormB0",
    "EvoNormS0",
    "FrozenBatchNorm",
    "GhostBatchNorm",
    "GroupNorm",
    "InstanceNorm",
    "LayerNorm",
    "Norm",
    "RMSNorm",
    "SwitchableNorm",
    "VirtualBatchNorm",
]
