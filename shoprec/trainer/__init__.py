"""The one fit loop (loop) and checkpoints kept in object storage (checkpoints); its settings are shoprec.fit_config,
outside this package, so that models and the server can name them without loading training."""
