"""Public ops: validation, backend dispatch and documentation (one module per op; an op whose
arithmetic has its own seam keeps it in a sibling module, as ``label_issues_cutoff``). Modules
with a leading underscore are private to the ops."""
