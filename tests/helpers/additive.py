"""A tiny additive metric for the resampling tests: the mean of column x."""

import numpy as np
import pandas as pd


def mean_of_x(rows: pd.DataFrame) -> dict[str, float]:
    return {"mean_x": float(rows["x"].mean())}


class MeanMetric:
    """An additive mean over rows: statistics (x, 1), value = sum x / count (a ratio estimator)."""

    def sufficient_statistics(self, rows):
        return np.stack([rows["x"].to_numpy(float), np.ones(len(rows))], axis=1)

    def aggregate_totals(self, totals):
        return {"mean_x": totals[..., 0] / totals[..., 1]}

    def aggregate(self, rows):
        return mean_of_x(rows)
