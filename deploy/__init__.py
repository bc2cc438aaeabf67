"""deepretrieval.deploy."""
