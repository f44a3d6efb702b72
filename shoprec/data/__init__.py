"""Shop data: the event schema, the built-in shop, importers, storage, ingest and the features training reads."""
