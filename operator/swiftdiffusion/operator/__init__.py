"""The kopf operator that reconciles T2IWorkflow resources into GPU-pinned pools."""
