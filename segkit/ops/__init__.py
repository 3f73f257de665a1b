"""Public ops: validation, backend dispatch and documentation (one module per op)."""
