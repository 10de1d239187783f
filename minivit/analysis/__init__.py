"""Looking inside a trained ViT (the paper's Fig. 6, 7 and 14): attention rollout, mean
attention distance, position-embedding similarity, patch-embedding filters; plots.py draws them."""
from .distance import mean_attention_distance, patch_distances
from .filters import embedding_filters
from .posembed import neighbour_similarity, patch_position_embeddings, pos_embed_similarity
from .rollout import attention_rollout, rollout_map

__all__ = ["attention_rollout", "embedding_filters", "mean_attention_distance",
           "neighbour_similarity", "patch_distances", "patch_position_embeddings",
           "pos_embed_similarity", "rollout_map"]
