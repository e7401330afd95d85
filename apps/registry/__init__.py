"""Model registry: families, versions, signatures, lineage, gates and approval."""
