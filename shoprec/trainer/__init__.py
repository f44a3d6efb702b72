"""The one fit loop (loop), its settings (config) and checkpoints kept in object storage (checkpoints)."""
