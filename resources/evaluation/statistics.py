"""Paired statistics over the golden questions: is one row of the comparison better than its baseline?

Two views of the same per-question pairs (a row against the base model answering the same way, bare or with
retrieval): the paired-bootstrap interval of the mean difference of a metric, and the exact sign test of the
per-question outcomes — questions the row wins against questions it loses, ties left out. On a 0/1 outcome
(`fact_correct`: every fact stated) the sign test is the exact McNemar test. The gate decides on the sign test;
the interval says how large the difference is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

RETRIEVAL = "+retrieval"  # the suffix of a row answered as served: the question in the grounded prompt


def baseline_of(role: str) -> str:
    """The row a role is compared with: the base model answering the same way (bare, or with retrieval)."""
    return "base" + RETRIEVAL if role.endswith(RETRIEVAL) else "base"


def _pairs(table: pd.DataFrame, role: str, metric: str) -> pd.DataFrame:
    mine, theirs = (table[table["model"] == r].set_index("id") for r in (role, baseline_of(role)))
    if metric not in mine or metric not in theirs:
        return pd.DataFrame(columns=["a", "b"])
    return pd.concat([mine[metric], theirs[metric]], axis=1, keys=["a", "b"]).dropna()


def _compared(table: pd.DataFrame) -> list[str]:
    roles = set(table["model"])
    return [r for r in table["model"].unique() if r != baseline_of(r) and baseline_of(r) in roles]


def paired_intervals(table: pd.DataFrame, metrics: tuple[str, ...], resamples: int = 2000, level: float = 0.95,
                     seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """role -> metric -> [low, high]: the paired-bootstrap interval of the mean per-question difference between the
    role and its baseline (`baseline_of`), over the golden questions both were scored on."""
    out: dict[str, dict[str, list[float]]] = {}
    for role in _compared(table):
        for metric in metrics:
            pair = _pairs(table, role, metric)
            if len(pair) < 2:
                continue
            diff = (pair["a"] - pair["b"]).to_numpy(dtype=float)
            rng = np.random.default_rng(seed)
            means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
            low, high = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
            out.setdefault(role, {})[metric] = [round(float(low), 4), round(float(high), 4)]
    return out


@dataclass(frozen=True)
class SignTest:
    """Per-question paired outcomes of a row against its baseline on one metric, and the exact two-sided sign test."""

    wins: int  # questions where the row scored higher
    losses: int  # ... lower
    ties: int
    p_value: float

    def to_dict(self) -> dict:
        return asdict(self)


def sign_test(a: list[float], b: list[float]) -> SignTest:
    """The exact two-sided sign test of paired scores (on 0/1 outcomes: the exact McNemar test)."""
    from scipy.stats import binomtest

    wins = sum(x > y for x, y in zip(a, b))
    losses = sum(x < y for x, y in zip(a, b))
    ties = len(a) - wins - losses
    p = binomtest(wins, wins + losses, 0.5, alternative="two-sided").pvalue if wins + losses else 1.0
    return SignTest(wins, losses, ties, round(float(p), 6))


def paired_tests(table: pd.DataFrame, metrics: tuple[str, ...]) -> dict[str, dict[str, dict]]:
    """role -> metric -> SignTest (as a dict) against the role's baseline, over the questions both were scored on."""
    out: dict[str, dict[str, dict]] = {}
    for role in _compared(table):
        for metric in metrics:
            pair = _pairs(table, role, metric)
            if len(pair):
                out.setdefault(role, {})[metric] = sign_test(list(pair["a"]), list(pair["b"])).to_dict()
    return out
