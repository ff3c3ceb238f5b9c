"""Training: the optimiser and schedule, the loop, checkpoints and run folders, the pretraining recipe."""
