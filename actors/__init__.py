"""deepretrieval.actors."""
