"""Pure functional forms of every layer: they never mutate their arguments."""

from normlab.norms.batch_instance_norm import batch_instance_norm as batch_instance_norm
from normlab.norms.batch_norm import batch_norm as batch_norm
from normlab.norms.batch_renorm import batch_renorm as batch_renorm
from normlab.norms.evo_norm import evo_norm_b0 as evo_norm_b0
from normlab.norms.evo_norm import evo_norm_s0 as evo_norm_s0
from normlab.norms.frozen_batch_norm import frozen_batch_norm as frozen_batch_norm
from normlab.norms.ghost_batch_norm import ghost_batch_norm as ghost_batch_norm
from normlab.norms.group_norm import group_norm as group_norm
from normlab.norms.instance_norm import instance_norm as instance_norm
from normlab.norms.layer_norm import layer_norm as layer_norm
from normlab.norms.rms_norm import rms_norm as rms_norm
from normlab.norms.switchable_norm import switchable_norm as switchable_norm
from normlab.norms.virtual_batch_norm import virtual_batch_norm as virtual_batch_norm

__all__ = [
    "batch_instance_norm",
    "batch_norm",
    "batch_renorm",
    "evo_norm_b0",
    "evo_norm_s0",
    "frozen_batch_norm",
    "ghost_batch_norm",
    "group_norm",
    "instance_norm",
    "layer_norm",
    "rms_norm",
    "switchable_norm",
    "virtual_batch_norm",
]
