"""The paper's baselines (Retrain, Prune&Tune) and the side-by-side comparison with NN-Factory."""
