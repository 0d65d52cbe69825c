"""The network: MR-VAE's FPDC encoder, GR and DR (:mod:`~mrvae.nn.model`), their building
blocks, the multi-term loss, presets, weights with their cards, and ONNX export."""
