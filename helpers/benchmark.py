"""Time each op of `helpers.ops` against torch's own on the Q2 network's shapes, in one process.

Each workload runs ours and torch's alternately (so both see the same machine load), `rounds`
times, and keeps the median of each; it reports forward and forward+backward ratios ours/torch and
their geometric means. `benchmarks/ops_speed.py` prints the table; the Q1 notebook ends with it.
"""

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision

BATCH = 128
# (in_channels, out_channels, size) of the eight 3x3 convolutions of the Q2 network
Q2_CONVS = ((3, 16, 32), (16, 16, 32), (16, 32, 16), (32, 32, 16), (32, 64, 8), (64, 64, 8), (64, 128, 4), (128, 128, 4))
# (channels, size) of the feature maps after each pair of convolutions
Q2_MAPS = ((16, 32), (32, 16), (64, 8), (128, 4))


@dataclass
class Workload:
    """One timed call: `make()` returns fresh keyword arguments; `grad_wrt` names the inputs to differentiate."""

    name: str
    op: str
    make: Callable
    grad_wrt: tuple = ("input",)
    reference: Callable = None


def _randn(*shape, channels_last=False, generator=None):
    tensor = torch.randn(*shape, generator=generator)
    return tensor.contiguous(memory_format=torch.channels_last) if channels_last and tensor.dim() == 4 else tensor


def _boxes(count, image_size, generator):
    """`count` random boxes [batch index, x1, y1, x2, y2] in image coordinates, over 2 images."""
    corners = torch.rand(count, 2, 2, generator=generator) * image_size
    low, high = corners.min(dim=1).values, corners.max(dim=1).values
    index = torch.randint(0, 2, (count, 1), generator=generator).float()
    return torch.cat([index, low, high], dim=1)


def _convolution(name, op, input_shape, weight_shape, generator, **options):
    """A conv2d or conv_transpose2d workload with a bias, differentiated in input, weight and bias."""
    out_channels = weight_shape[1] if op == "conv_transpose2d" else weight_shape[0]
    return Workload(
        name, op,
        lambda: dict(input=_randn(*input_shape, channels_last=True, generator=generator),
                     weight=_randn(*weight_shape, generator=generator) * 0.1,
                     bias=_randn(out_channels, generator=generator), **options),
        grad_wrt=("input", "weight", "bias"))


def workloads():
    """The benchmark's workloads: every Q2 layer's op at batch 128, plus the Q1 extras."""
    g = torch.Generator().manual_seed(0)
    items = []
    for c_in, c_out, size in Q2_CONVS:
        items.append(_convolution(f"conv2d {c_in}->{c_out} {size}x{size}", "conv2d", (BATCH, c_in, size, size),
                                  (c_out, c_in, 3, 3), g, padding=1))
    items.append(_convolution("conv2d 16->32 32x32 stride 2 dilation 2", "conv2d", (BATCH, 16, 32, 32),
                              (32, 16, 3, 3), g, stride=2, padding=2, dilation=2))
    items.append(_convolution("conv2d 3->6 32x32 k5 stride 2 dilation 2", "conv2d", (BATCH, 3, 32, 32),
                              (6, 3, 5, 5), g, stride=2, dilation=2))  # the assignment's strided layer
    items.append(_convolution("conv_transpose2d 32->16 16x16 stride 2", "conv_transpose2d", (BATCH, 32, 16, 16),
                              (32, 16, 3, 3), g, stride=2, padding=1, output_padding=1))
    for channels, size in Q2_MAPS[:3]:
        items.append(Workload(
            f"max_pool2d 2x2 {channels}x{size}x{size}", "max_pool2d",
            lambda channels=channels, size=size: dict(
                input=_randn(BATCH, channels, size, size, channels_last=True, generator=g), kernel_size=2)))
    items.append(Workload(
        "avg_pool2d 4x4 (global) 128x4x4", "avg_pool2d",
        lambda: dict(input=_randn(BATCH, 128, 4, 4, channels_last=True, generator=g), kernel_size=4)))
    for training in (True, False):
        for channels, size in Q2_MAPS:
            items.append(Workload(
                f"batch_norm {'train' if training else 'eval'} {channels}x{size}x{size}", "batch_norm",
                lambda channels=channels, size=size, training=training: dict(
                    input=_randn(BATCH, channels, size, size, channels_last=True, generator=g),
                    running_mean=torch.zeros(channels), running_var=torch.ones(channels), training=training)))
    for smoothing in (0.0, 0.1):
        items.append(Workload(
            f"cross_entropy 128x10 label_smoothing {smoothing:g}", "cross_entropy",
            lambda smoothing=smoothing: dict(input=_randn(BATCH, 10, generator=g),
                                             target=torch.randint(0, 10, (BATCH,), generator=g),
                                             label_smoothing=smoothing)))
    items.append(Workload(
        "mse_loss 128x16x32x32", "mse_loss",
        lambda: dict(input=_randn(BATCH, 16, 32, 32, generator=g), target=_randn(BATCH, 16, 32, 32, generator=g))))
    items.append(Workload(
        "sigmoid 128x16x32x32", "sigmoid", lambda: dict(input=_randn(BATCH, 16, 32, 32, generator=g))))
    items.append(Workload(
        "flatten 128x128x1x1 from dim 1", "flatten",
        lambda: dict(input=_randn(BATCH, 128, 1, 1, generator=g), start_dim=1)))
    items.append(Workload(
        "roi_pool 64x50x50, 300 boxes, 7x7, scale 1/16", "roi_pool",
        lambda: dict(input=_randn(2, 64, 50, 50, generator=g), boxes=_boxes(300, 800.0, g),
                     output_size=7, spatial_scale=1 / 16)))
    return items


REFERENCES = {
    "conv2d": F.conv2d,
    "conv_transpose2d": F.conv_transpose2d,
    "max_pool2d": F.max_pool2d,
    "avg_pool2d": F.avg_pool2d,
    "batch_norm": F.batch_norm,
    "cross_entropy": F.cross_entropy,
    "mse_loss": F.mse_loss,
    "sigmoid": torch.sigmoid,
    "flatten": torch.flatten,
    "roi_pool": torchvision.ops.roi_pool,
}


def _time_once(fn, kwargs, grad_wrt, backward):
    if backward:
        kwargs = {k: v.requires_grad_(True) if k in grad_wrt and isinstance(v, torch.Tensor) else v
                  for k, v in kwargs.items()}
    started = time.perf_counter()
    output = fn(**kwargs)
    if backward and output.requires_grad:
        output.backward(torch.ones_like(output) if output.dim() else None)
    return time.perf_counter() - started


def time_workload(workload, ours, rounds=15, warmup=3):
    """Median seconds of (ours, torch) forward and forward+backward, measured alternately."""
    functions = {"ours": ours, "torch": REFERENCES[workload.op]}
    kwargs = workload.make()

    def timed(name, backward):
        fresh = {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        return _time_once(functions[name], fresh, workload.grad_wrt, backward=backward)

    with torch.no_grad():
        medians = _alternate_medians({f"{name}_fwd": lambda name=name: timed(name, False) for name in functions},
                                     rounds, warmup)
    medians.update(_alternate_medians({f"{name}_fwdbwd": lambda name=name: timed(name, True) for name in functions},
                                      rounds, warmup))
    return medians


def _alternate_medians(timers, rounds, warmup=3):
    """Call each of `timers` (name -> a function returning seconds) in turn, warmup + rounds times, so
    that the machine's load hits them alike; return the median of each over the last `rounds`."""
    times = {name: [] for name in timers}
    for index in range(warmup + rounds):
        for name, timer in timers.items():
            elapsed = timer()
            if index >= warmup:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


def _seconds(function, *args, **kwargs):
    """Wall-clock seconds of one call."""
    started = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - started


def run(rounds=15, only=None, progress=False):
    """Time every workload (or those whose name contains `only`); return one dict per workload."""
    from helpers import ops

    rows = []
    selected = [w for w in workloads() if only is None or only in w.name]
    for workload in selected:
        if progress:
            print(f"timing {workload.name} ...", flush=True)
        medians = time_workload(workload, getattr(ops, workload.op), rounds=rounds)
        rows.append(dict(name=workload.name, **medians,
                         fwd_ratio=medians["ours_fwd"] / medians["torch_fwd"],
                         fwdbwd_ratio=medians["ours_fwdbwd"] / medians["torch_fwdbwd"]))
    return rows


def geometric_mean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def format_table(rows):
    """The rows as a table of milliseconds and ratios, with the geometric means and the worst ratio."""
    header = f"{'workload':<48}{'ours fwd':>9}{'torch':>8}{'ratio':>7}  {'ours f+b':>9}{'torch':>8}{'ratio':>7}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['name']:<48}{row['ours_fwd'] * 1e3:>9.2f}{row['torch_fwd'] * 1e3:>8.2f}{row['fwd_ratio']:>7.2f}"
            f"  {row['ours_fwdbwd'] * 1e3:>9.2f}{row['torch_fwdbwd'] * 1e3:>8.2f}{row['fwdbwd_ratio']:>7.2f}"
        )
    lines.append("-" * len(header))
    fwd, both = [r["fwd_ratio"] for r in rows], [r["fwdbwd_ratio"] for r in rows]
    lines.append(f"{'geometric mean of ratios (times in ms)':<48}{'':>17}{geometric_mean(fwd):>7.2f}"
                 f"  {'':>17}{geometric_mean(both):>7.2f}")
    worst = max(rows, key=lambda r: r["fwdbwd_ratio"])
    lines.append(f"worst forward+backward ratio: {worst['fwdbwd_ratio']:.2f} ({worst['name']})")
    return "\n".join(lines)


def matmul_against_convolution(in_channels=64, out_channels=64, size=8, rounds=15):
    """Time torch's own matrix product on a convolution's im2col shapes against torch's convolution.

    The product (N * H * W pixels, C_in * 9 window values) @ (C_in * 9, C_out) does exactly the
    multiply-adds of a 3x3 convolution with padding 1 (N = BATCH, a channels-last input), without
    building the windows. Returns the shape and, under "matmul" and "conv2d", the median seconds and
    the rate in GFLOP/s: the matmul's rate bounds any convolution built on it, ours included.
    """
    generator = torch.Generator().manual_seed(0)
    pixels, depth = BATCH * size * size, in_channels * 9
    columns, kernel = torch.randn(pixels, depth, generator=generator), torch.randn(depth, out_channels, generator=generator)
    input = _randn(BATCH, in_channels, size, size, channels_last=True, generator=generator)
    weight = torch.randn(out_channels, in_channels, 3, 3, generator=generator)
    with torch.no_grad():
        medians = _alternate_medians({"matmul": lambda: _seconds(torch.mm, columns, kernel),
                                      "conv2d": lambda: _seconds(F.conv2d, input, weight, padding=1)}, rounds)
    flops = 2 * pixels * depth * out_channels
    rates = {name: dict(seconds=seconds, gflops=flops / seconds / 1e9) for name, seconds in medians.items()}
    return dict(in_channels=in_channels, out_channels=out_channels, size=size, **rates)


def format_matmul_against_convolution(result):
    """`matmul_against_convolution`'s result as two lines and the ratio of their times."""
    matmul, conv = result["matmul"], result["conv2d"]
    in_channels, out_channels, size = result["in_channels"], result["out_channels"], result["size"]
    names = {
        "matmul": f"torch.mm ({BATCH * size * size} x {in_channels * 9}) @ ({in_channels * 9} x {out_channels})",
        "conv2d": f"F.conv2d {in_channels}->{out_channels} {size}x{size}, batch {BATCH}",
    }
    lines = [f"{names[key]:<40}{result[key]['seconds'] * 1e3:7.2f} ms {result[key]['gflops']:6.0f} GFLOP/s"
             for key in ("matmul", "conv2d")]
    lines.append(f"the bare matrix product takes {matmul['seconds'] / conv['seconds']:.2f}x the time of torch's "
                 "convolution, for the same multiply-adds")
    return "\n".join(lines)
