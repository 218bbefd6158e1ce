"""The infrastructure every stage stands on: errors, atomic artifacts, checkpoints, devices,
downloads, weights, progress bars, pictures, and the ceilings on sizes. Imports nothing of the
stages (the layer rule in docs/architecture.md)."""
