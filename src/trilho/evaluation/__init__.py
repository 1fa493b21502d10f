"""Honest evaluation, pure: folds, metrics, intervals, baselines, explanations, groups, decision
thresholds and the promotion gate's judgment. No lake, tracker, cluster or network."""
