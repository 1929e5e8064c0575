"""Training: optimisers (`optim`), learning-rate schedules (`schedule`) and the loop (`loop`)."""
