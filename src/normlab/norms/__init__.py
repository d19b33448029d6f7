"""One file per method: its functional form, its module, its registry entry lives in
normlab.registry."""

from normlab.norms._base import Norm as Norm
from normlab.norms.batch_norm import BatchNorm as BatchNorm
from normlab.norms.group_norm import GroupNorm as GroupNorm
from normlab.norms.instance_norm import InstanceNorm as InstanceNorm
from normlab.norms.layer_norm import LayerNorm as LayerNorm
from normlab.norms.rms_norm import RMSNorm as RMSNorm

__all__ = ["BatchNorm", "GroupNorm", "InstanceNorm", "LayerNorm", "Norm", "RMSNorm"]
