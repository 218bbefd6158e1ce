"""The infrastructure every stage stands on: errors, atomic artifacts, checkpoints, devices,
weights loading, progress bars, pictures, and the ceilings on sizes. Imports nothing of the
stages (the layer rule in docs/architecture.md)."""
