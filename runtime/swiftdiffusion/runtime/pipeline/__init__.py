"""The base model's side of a generation: text conditioning, the denoising loop and its seams
(noise predictor, step hooks, residual schedule), the split UNet and the per-request engine."""
