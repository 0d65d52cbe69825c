"""Enhancing photos and videos of any size with a trained network: the :class:`Enhancer`'s
pipeline (global decision, tiles, named refinement stages), its backends, batches, videos and
Ray clusters. See docs/ARCHITECTURE.md for the path of one photo."""
