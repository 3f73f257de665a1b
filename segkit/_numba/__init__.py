"""Numba kernels (parallel, cached on disk). Imported lazily: numba is only loaded on use."""
