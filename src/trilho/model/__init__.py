"""What travels with a logged model: the features' encoding, the estimators and the code MLflow loads.

Pure: no lake, tracker, cluster or network. ``servable``, ``encoding`` and ``answers`` are copied
into every logged model and import nothing of trilho but each other."""
