"""Print the time of each Q1 op against torch's own on the Q2 network's shapes (see helpers.benchmark).

Usage: .venv/bin/python benchmarks/ops_speed.py [--rounds N] [--only SUBSTRING] [--threads N]
Ratios are ours / torch, medians of N alternating rounds in this one process: below 1 ours is faster.
Then torch.mm on a Q2 layer's im2col shapes against torch's conv2d of that layer: the floor under any
convolution built on matmul.
"""

import argparse

import torch

from helpers.benchmark import format_matmul_against_convolution, format_table, matmul_against_convolution, run

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--rounds", type=int, default=15, help="timed rounds per workload (default 15)")
parser.add_argument("--only", help="time only the workloads whose name contains this text")
parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
args = parser.parse_args()
if args.rounds < 1:
    parser.error("--rounds must be at least 1")
if args.threads is not None:
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    torch.set_num_threads(args.threads)
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds")
print(format_table(run(rounds=args.rounds, only=args.only, progress=True)))
print()
print(format_matmul_against_convolution(matmul_against_convolution(rounds=args.rounds)))
