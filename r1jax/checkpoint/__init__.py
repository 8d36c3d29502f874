"""Checkpoints: Orbax save/restore of state pytrees, Grain iterator state and JSON metadata.

    from r1jax import checkpoint
    ckpt = checkpoint.CheckpointManager(workdir + "/ckpt", max_to_keep=3)
    state, metadata = ckpt.restore(ckpt.latest_step(), target=abstract_state, data_iter=it)
    ckpt.save(step, state, data_iter=it, metadata={"loss": 1.23})
"""
from r1jax.checkpoint.export import is_model, load_config, load_metadata, load_model, save_model, weights_digest
from r1jax.checkpoint.manager import CheckpointManager

__all__ = ["CheckpointManager", "save_model", "load_model", "load_config", "load_metadata", "is_model",
           "weights_digest"]
