"""The serving runtime: base-model service, ControlNet service, LoRA loading, latent parallelism."""
