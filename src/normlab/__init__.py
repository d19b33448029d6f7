"""normlab: normalization layers for PyTorch — exact, fast, and tested against the papers.

The layer classes and the helpers a method publishes (``normlab.BatchNorm``,
``normlab.reference_pass``, ...) are derived from the `normlab.norms.Entry` block that closes
each method file; the rest of the API is listed here.
"""

from typing import TYPE_CHECKING

from normlab import functional as functional
from normlab.distributed import sync as sync
from normlab.distributed import unsync as unsync
from normlab.errors import NormlabError as NormlabError
from normlab.norms import Norm as Norm
from normlab.norms import entries as _entries
from normlab.registry import available as available
from normlab.registry import create as create
from normlab.registry import factory as factory
from normlab.reparam import entries as _weight_entries
from normlab.rnn import NormLSTM as NormLSTM
from normlab.rnn import NormLSTMCell as NormLSTMCell
from normlab.surgery import convert as convert
from normlab.surgery import fold as fold
from normlab.surgery import freeze as freeze
from normlab.surgery import parametrize as parametrize
from normlab.surgery import recalibrate as recalibrate
from normlab.surgery import unfreeze as unfreeze
from normlab.surgery import unparametrize as unparametrize

if TYPE_CHECKING:  # the names discovery gives, spelled out for static type checkers
    from normlab.norms import AdaIN as AdaIN
    from normlab.norms import BatchInstanceNorm as BatchInstanceNorm
    from normlab.norms import BatchNorm as BatchNorm
    from normlab.norms import BatchRenorm as BatchRenorm
    from normlab.norms import BoundedBatchNorm as BoundedBatchNorm
    from normlab.norms import DivisiveNorm as DivisiveNorm
    from normlab.norms import DynamicTanh as DynamicTanh
    from normlab.norms import EvoNormB0 as EvoNormB0
    from normlab.norms import EvoNormS0 as EvoNormS0
    from normlab.norms import FilterResponseNorm as FilterResponseNorm
    from normlab.norms import FrozenBatchNorm as FrozenBatchNorm
    from normlab.norms import GhostBatchNorm as GhostBatchNorm
    from normlab.norms import GroupNorm as GroupNorm
    from normlab.norms import InstanceNorm as InstanceNorm
    from normlab.norms import LayerNorm as LayerNorm
    from normlab.norms import LpNorm as LpNorm
    from normlab.norms import MeanOnlyBatchNorm as MeanOnlyBatchNorm
    from normlab.norms import RMSNorm as RMSNorm
    from normlab.norms import StreamingNorm as StreamingNorm
    from normlab.norms import SwitchableNorm as SwitchableNorm
    from normlab.norms import VirtualBatchNorm as VirtualBatchNorm
    from normlab.norms.batch_instance_norm import (
        clamp_gates_after_step as clamp_gates_after_step,
    )
    from normlab.norms.batch_instance_norm import gate_param_groups as gate_param_groups
    from normlab.norms.bounded_batch_norm import (
        bound_batch_norm_scales_ as bound_batch_norm_scales_,
    )
    from normlab.norms.divisive_norm import divisive_l1_penalty as divisive_l1_penalty
    from normlab.norms.virtual_batch_norm import reference_pass as reference_pass
    from normlab.reparam.cosine_norm import CosineConv2d as CosineConv2d
    from normlab.reparam.cosine_norm import CosineLinear as CosineLinear
    from normlab.reparam.norm_prop import NormPropConv2d as NormPropConv2d
    from normlab.reparam.norm_prop import NormPropLinear as NormPropLinear
    from normlab.reparam.self_normalizing import selu_init_ as selu_init_
    from normlab.reparam.singular_value_bounding import (
        bound_singular_values_ as bound_singular_values_,
    )
    from normlab.reparam.spectral_norm import spectral_norm as spectral_norm
    from normlab.reparam.weight_norm import init_weight_norm_ as init_weight_norm_
    from normlab.reparam.weight_norm import weight_norm as weight_norm
    from normlab.reparam.weight_standardization import WSConv2d as WSConv2d
    from normlab.reparam.weight_standardization import (
        weight_standardization as weight_standardization,
    )

__version__ = "0.1.0"

_DERIVED: dict[str, object] = {
    **{entry.cls.__name__: entry.cls for entry in _entries()},
    **{fn.__name__: fn for entry in _entries() for fn in entry.exports},
    **{e.apply.__name__: e.apply for e in _weight_entries() if e.apply is not None},
    **{x.__name__: x for entry in _weight_entries() for x in entry.exports},
}
globals().update(_DERIVED)

__all__ = sorted({
    *_DERIVED,
    "Norm",
    "NormLSTM",
    "NormLSTMCell",
    "NormlabError",
    "available",
    "convert",
    "create",
    "factory",
    "fold",
    "freeze",
    "functional",
    "parametrize",
    "recalibrate",
    "sync",
    "unfreeze",
    "unparametrize",
    "unsync",
})
