"""Evaluation and reporting: metrics (SIDE, MAD), evaluate, figures, the HTML report."""
