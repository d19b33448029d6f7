"""normlab: normalization layers for PyTorch — exact, fast, and tested against the papers."""

from normlab import functional as functional
from normlab.errors import NormlabError as NormlabError
from normlab.norms import BatchNorm as BatchNorm
from normlab.norms import GroupNorm as GroupNorm
from normlab.norms import InstanceNorm as InstanceNorm
from normlab.norms import LayerNorm as LayerNorm
from normlab.norms import Norm as Norm
from normlab.norms import RMSNorm as RMSNorm
from normlab.registry import available as available
from normlab.registry import create as create
from normlab.registry import factory as factory

__version__ = "0.1.0"

__all__ = [
    "BatchNorm",
    "GroupNorm",
    "InstanceNorm",
    "LayerNorm",
    "Norm",
    "NormlabError",
    "RMSNorm",
    "available",
    "create",
    "factory",
    "functional",
]
