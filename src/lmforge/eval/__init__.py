"""Evaluation: pure metric maths (`metrics`), and measuring a run on held-out text (`evaluate`)."""
