"""Pipeline stages, one per file: audit (outermost), policy, approval, masking."""
