"""Pure functional forms of every layer: they never mutate their arguments.

The names are those of the ``functional=`` forms in the method files' `normlab.norms.Entry`
and `normlab.reparam.WeightEntry` blocks (``normlab.functional.group_norm``, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from normlab.norms import entries as _entries
from normlab.reparam import entries as _weight_entries

if TYPE_CHECKING:  # the names discovery gives, spelled out for static type checkers
    from normlab.norms.adain import adain as adain
    from normlab.norms.adain import adain_from_stats as adain_from_stats
    from normlab.norms.batch_instance_norm import batch_instance_norm as batch_instance_norm
    from normlab.norms.batch_norm import batch_norm as batch_norm
    from normlab.norms.batch_renorm import batch_renorm as batch_renorm
    from normlab.norms.bounded_batch_norm import bounded_bn_weight as bounded_bn_weight
    from normlab.norms.divisive_norm import divisive_norm as divisive_norm
    from normlab.norms.dynamic_tanh import dynamic_tanh as dynamic_tanh
    from normlab.norms.evo_norm import evo_norm_b0 as evo_norm_b0
    from normlab.norms.evo_norm import evo_norm_s0 as evo_norm_s0
    from normlab.norms.filter_response_norm import filter_response_norm as filter_response_norm
    from normlab.norms.frozen_batch_norm import frozen_batch_norm as frozen_batch_norm
    from normlab.norms.ghost_batch_norm import ghost_batch_norm as ghost_batch_norm
    from normlab.norms.group_norm import group_norm as group_norm
    from normlab.norms.instance_norm import instance_norm as instance_norm
    from normlab.norms.layer_norm import layer_norm as layer_norm
    from normlab.norms.lp_norm import lp_norm as lp_norm
    from normlab.norms.mean_only_batch_norm import mean_only_batch_norm as mean_only_batch_norm
    from normlab.norms.rms_norm import rms_norm as rms_norm
    from normlab.norms.streaming_norm import streaming_norm as streaming_norm
    from normlab.norms.switchable_norm import switchable_norm as switchable_norm
    from normlab.norms.virtual_batch_norm import virtual_batch_norm as virtual_batch_norm
    from normlab.reparam.cosine_norm import cosine_conv2d as cosine_conv2d
    from normlab.reparam.cosine_norm import cosine_linear as cosine_linear
    from normlab.reparam.norm_prop import norm_prop_conv2d as norm_prop_conv2d
    from normlab.reparam.norm_prop import norm_prop_linear as norm_prop_linear
    from normlab.reparam.singular_value_bounding import (
        bounded_singular_values as bounded_singular_values,
    )
    from normlab.reparam.spectral_norm import (
        spectral_normalized_weight as spectral_normalized_weight,
    )
    from normlab.reparam.weight_norm import weight_normalize as weight_normalize
    from normlab.reparam.weight_standardization import standardized_weight as standardized_weight

_FORMS = {
    fn.__name__: fn for entry in (*_entries(), *_weight_entries()) for fn in entry.functional
}
globals().update(_FORMS)

__all__ = sorted(_FORMS)
