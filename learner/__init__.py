"""deepretrieval.learner."""
