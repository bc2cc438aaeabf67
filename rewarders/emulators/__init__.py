"""deepretrieval.rewarders.emulators."""
