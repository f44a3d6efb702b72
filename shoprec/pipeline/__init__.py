"""The pipeline's own side: running the DAG (runner, containers), KFP, TrainJob, Kubernetes, deploy, notify, demo.

Nothing in the rest of the library imports this package."""
