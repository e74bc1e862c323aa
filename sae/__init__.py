"""Sparse-autoencoder dictionary learning on any activations: tensors in, features out.

This package knows nothing of transformers, tokens or hooks, and never imports `interp`.
"""
