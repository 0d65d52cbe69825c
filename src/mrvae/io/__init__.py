"""Files in and out, below everything else: images (PNG, JPEG, TIFF, WebP, BMP, HEIC, AVIF),
camera RAW and video containers, each with one clear error per kind of bad file, and atomic
writes. Pixels are float32 ``(H, W, C)`` in [0, 1] here, as decoded."""
