"""normlab: normalization layers for PyTorch — exact, fast, and tested against the papers."""

from normlab import functional as functional
from normlab.errors import NormlabError as NormlabError
from normlab.norms import BatchInstanceNorm as BatchInstanceNorm
from normlab.norms import BatchNorm as BatchNorm
from normlab.norms import BatchRenorm as BatchRenorm
from normlab.norms import EvoNormB0 as EvoNormB0
from normlab.norms import EvoNormS0 as EvoNormS0
from normlab.norms import FrozenBatchNorm as FrozenBatchNorm
from normlab.norms import GhostBatchNorm as GhostBatchNorm
from normlab.norms import GroupNorm as GroupNorm
from normlab.norms import InstanceNorm as InstanceNorm
from normlab.norms import LayerNorm as LayerNorm
from normlab.norms import Norm as Norm
from normlab.norms import RMSNorm as RMSNorm
from normlab.norms import SwitchableNorm as SwitchableNorm
from normlab.norms import VirtualBatchNorm as VirtualBatchNorm
from normlab.norms.batch_instance_norm import clamp_gates_after_step as clamp_gates_after_step
from normlab.norms.batch_instance_norm import gate_param_groups as gate_param_groups
from normlab.norms.virtual_batch_norm import reference_pass as reference_pass
from normlab.registry import available as available
from normlab.registry import create as create
from normlab.registry import factory as factory
from normlab.surgery import convert as convert
from normlab.surgery import fold as fold
from normlab.surgery import freeze as freeze
from normlab.surgery import recalibrate as recalibrate
from normlab.surgery import unfreeze as unfreeze

__version__ = "0.1.0"

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
    "NormlabError",
    "RMSNorm",
    "SwitchableNorm",
    "VirtualBatchNorm",
    "available",
    "clamp_gates_after_step",
    "convert",
    "create",
    "factory",
    "fold",
    "freeze",
    "functional",
    "gate_param_groups",
    "recalibrate",
    "reference_pass",
    "unfreeze",
]
