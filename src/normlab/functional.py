"""Pure functional forms of every layer: they never mutate their arguments."""

from normlab.norms.batch_norm import batch_norm as batch_norm
from normlab.norms.group_norm import group_norm as group_norm
from normlab.norms.instance_norm import instance_norm as instance_norm
from normlab.norms.layer_norm import layer_norm as layer_norm
from normlab.norms.rms_norm import rms_norm as rms_norm

__all__ = ["batch_norm", "group_norm", "instance_norm", "layer_norm", "rms_norm"]
