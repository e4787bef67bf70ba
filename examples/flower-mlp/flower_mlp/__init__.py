"""Kaires-FL example: a ≥ 100k-parameter numpy MLP trained with ``KairesFedAvg``."""
