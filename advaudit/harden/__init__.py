"""Adversarial training (``advaudit harden``): inner maximisation, training loop, export."""
