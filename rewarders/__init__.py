"""deepretrieval.rewarders."""
