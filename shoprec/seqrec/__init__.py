"""The sequential recommender: model, training under torchrun, ensembles, recommending and its MLflow pyfunc."""
