"""Using a trained model elsewhere: another resolution, a new head, linear probes, and the
official google-research checkpoints."""
from .resize import (
    interpolation_matrix,
    resize_grid,
    resize_images,
    resize_params,
    resize_pos_embed,
)

__all__ = ["interpolation_matrix", "resize_grid", "resize_images", "resize_params",
           "resize_pos_embed"]
