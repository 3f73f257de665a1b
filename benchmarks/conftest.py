"""Shared helpers for the pytest-benchmark suites (run with `make bench`)."""
from __future__ import annotations

import pytest

from segkit import _backend


def require(name: str) -> None:
    info = _backend.backend_info(name)
    if not info.available:
        pytest.skip(f"{name} backend unavailable: {info.reason}")


def sync_cuda():
    """Block until queued GPU work is done (so timings cover it)."""
    import cupy

    cupy.cuda.get_current_stream().synchronize()
