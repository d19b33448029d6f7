"""Cross-replica statistics over torch.distributed: every batch-dependent norm computes its
training statistics over the concatenated batch of all replicas (`sync`), exactly, with
uneven and empty per-replica batches, on gloo (CPU) as on NCCL."""

from normlab.core.cross_replica import CrossReplicaMoments as CrossReplicaMoments
from normlab.core.cross_replica import merge_across as merge_across
from normlab.distributed.sync import Synced as Synced
from normlab.distributed.sync import sync as sync
from normlab.distributed.sync import sync_with_report as sync_with_report
from normlab.distributed.sync import unsync as unsync

__all__ = ["CrossReplicaMoments", "Synced", "merge_across", "sync", "sync_with_report", "unsync"]
