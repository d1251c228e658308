"""The supernet: importance reordering, the elastic super-transformer, sliceable LoRA, extraction.

    order = reorder_by_importance(model)      # once: every sub-network becomes a prefix
    net = ElasticSupernet(model)              # model may carry peft LoRA adapters
    net.set_active(SubnetConfig.uniform(net.arch, depth=4, heads=8, mlp=768))
    small = extract(model, net.active)        # standalone smaller HF model, LoRA merged
"""

from mlfs_edge.supernet.elastic import ElasticSupernet, SlicedLinear
from mlfs_edge.supernet.extract import MlfsBertConfig, extract, merged_state_dict
from mlfs_edge.supernet.importance import ImportanceOrder, apply_order, compute_order, reorder_by_importance

__all__ = ["ElasticSupernet", "ImportanceOrder", "MlfsBertConfig", "SlicedLinear", "apply_order", "compute_order",
           "extract", "merged_state_dict", "reorder_by_importance"]
