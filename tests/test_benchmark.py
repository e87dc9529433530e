"""helpers.benchmark: what its tables report, checked on made-up and on tiny real timings (no speed asserted)."""

import math

import pytest

from helpers import benchmark


def _row(name, fwd, fwdbwd):
    return dict(name=name, ours_fwd=fwd * 1e-3, torch_fwd=1e-3, ours_fwdbwd=fwdbwd * 1e-3, torch_fwdbwd=1e-3,
                fwd_ratio=fwd, fwdbwd_ratio=fwdbwd)


def test_geometric_mean_is_the_exponential_of_the_mean_log():
    assert benchmark.geometric_mean([1.0, 4.0]) == pytest.approx(2.0)
    assert benchmark.geometric_mean([2.0, 2.0, 2.0]) == pytest.approx(2.0)


def test_table_reports_the_geometric_means_and_the_worst_workload():
    table = benchmark.format_table([_row("a", 1.0, 4.0), _row("b", 4.0, 1.0)])
    means = [line for line in table.splitlines() if line.startswith("geometric mean")][0]
    assert means.split()[-2:] == ["2.00", "2.00"]
    assert table.splitlines()[-1] == "worst forward+backward ratio: 4.00 (a)"


def test_matmul_against_convolution_times_the_same_multiply_adds():
    result = benchmark.matmul_against_convolution(in_channels=4, out_channels=8, size=4, rounds=1)
    flops = 2 * benchmark.BATCH * 4 * 4 * (4 * 9) * 8
    for name in ("matmul", "conv2d"):
        assert result[name]["seconds"] > 0
        assert result[name]["gflops"] == pytest.approx(flops / result[name]["seconds"] / 1e9)
    text = benchmark.format_matmul_against_convolution(result)
    assert f"({benchmark.BATCH * 16} x 36) @ (36 x 8)" in text
    ratio = result["matmul"]["seconds"] / result["conv2d"]["seconds"]
    assert f"takes {ratio:.2f}x" in text and math.isfinite(ratio)
