"""Cross-replica statistics over torch.distributed: every batch-dependent norm computes its
training statistics over the concatenated batch of all replicas (`sync`), exactly, with
uneven and empty per-replica batches, on gloo (CPU) as on NCCL."""

from normlab.core.cross_replica import CrossReplicaMoments as CrossReplicaMoments
from normlab.core.cross_replica import merge_across as merge_across
from normlab.core.docstrings import append_shared_args as _append_shared_args
from normlab.distributed.sync import Synced as Synced
from normlab.distributed.sync import sync as sync
from normlab.distributed.sync import sync_with_report as sync_with_report
from normlab.distributed.sync import unsync as unsync
from normlab.surgery.walker import SHARED_ARGS as _SHARED_ARGS

__all__ = ["CrossReplicaMoments", "Synced", "merge_across", "sync", "sync_with_report", "unsync"]

for _tool in (sync, sync_with_report, unsync):
    _append_shared_args(_tool, _SHARED_ARGS)  # model, skip, only, inplace: documented once
del _tool
