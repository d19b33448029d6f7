"""Model surgery: one module walker and the tools built on it.

* `replace_modules`: replace submodules by path (deep copy by default), with a report.
* `convert`: any torch.nn or normlab norm to any registered norm, carrying what is meaningful.
* `freeze` / `unfreeze`: statistics (and optionally parameters) that survive ``.train()``.
* `recalibrate`: exact population statistics over batches (precise BN, AdaBN).
* `fold`: BN-family layers folded into the preceding conv / linear for inference.
* `parametrize` / `unparametrize`: a weight-side method on every conv / linear layer, and off.
"""

from normlab.core.docstrings import append_shared_args as _append_shared_args
from normlab.surgery.convert import convert as convert
from normlab.surgery.convert import convert_layer as convert_layer
from normlab.surgery.convert import convert_with_report as convert_with_report
from normlab.surgery.fold import fold as fold
from normlab.surgery.fold import fold_with_report as fold_with_report
from normlab.surgery.freeze import FrozenLayer as FrozenLayer
from normlab.surgery.freeze import freeze as freeze
from normlab.surgery.freeze import is_frozen as is_frozen
from normlab.surgery.freeze import unfreeze as unfreeze
from normlab.surgery.parametrize import Parametrized as Parametrized
from normlab.surgery.parametrize import parametrize as parametrize
from normlab.surgery.parametrize import parametrize_with_report as parametrize_with_report
from normlab.surgery.parametrize import unparametrize as unparametrize
from normlab.surgery.recalibrate import Recalibrated as Recalibrated
from normlab.surgery.recalibrate import recalibrate as recalibrate
from normlab.surgery.walker import SHARED_ARGS as _SHARED_ARGS
from normlab.surgery.walker import Replacement as Replacement
from normlab.surgery.walker import matches as matches
from normlab.surgery.walker import replace_modules as replace_modules

__all__ = [
    "FrozenLayer",
    "Parametrized",
    "Recalibrated",
    "Replacement",
    "convert",
    "convert_layer",
    "convert_with_report",
    "fold",
    "fold_with_report",
    "freeze",
    "is_frozen",
    "matches",
    "parametrize",
    "parametrize_with_report",
    "recalibrate",
    "replace_modules",
    "unfreeze",
    "unparametrize",
]

for _tool in (convert, convert_with_report, fold, fold_with_report, freeze, unfreeze,
              parametrize, parametrize_with_report, unparametrize, recalibrate, replace_modules):
    _append_shared_args(_tool, _SHARED_ARGS)  # model, skip, only, inplace: documented once
del _tool
