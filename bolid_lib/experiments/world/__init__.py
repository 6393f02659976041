"""The world of ``world_proof``: procedural people whose pose class the prompt sets, a fixed image <-> latent map,
a tiny text encoder, a reduced-width SDXL-layout UNet, the evaluation classifiers."""
