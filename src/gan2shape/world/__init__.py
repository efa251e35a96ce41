"""The synthetic world with ground truth: scenes, rendering, the test set."""
