"""MLflow: versions and aliases (versions) and what a registered version carries (model_record)."""
