"""Stable Video Diffusion XT 1.1 (image -> 25-frame clip): our implementation, official keys.

Shares SP4D's layers where the architecture coincides (backend/sp4d: the video UNet layout and its
ResBlocks, transformer and time-mix blocks, the KL encoder/decoder, the OpenCLIP image tower, the
sampler); only SVD's own blocks live here. Public API:
    SVD.from_config(params)               build from the ``model.params`` tree of svd_xt_1_1.yaml
    checkpoint.load_model(path, config)   strict, from safetensors, straight to dtype/device
    SVDPipeline(model, options).generate(image_u8, params)   (H, W, 3) uint8 -> (T, H, W, 3) uint8
"""

from .model import SVD  # noqa: F401
