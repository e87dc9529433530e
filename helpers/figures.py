"""Pictures of the Q1 notebook's ops, each drawn from real tensors computed with torch itself.

Every function returns a ``matplotlib.figure.Figure`` made with pyplot (so a notebook cell shows it
with ``plt.show()``) and never shows it itself. Figures are at most about 10 x 4.5 inches, with
constrained layout and legends outside the axes. The numbered grids of values share one drawer,
``_numbered_grid``; the pictures only use torch's own functional ops, which is fine for pictures
(the ops of ``helpers.ops`` are proved against the same ops in the notebook).
"""

import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
import torchvision
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.patches import Circle, Patch, Rectangle

# Light cells (white to mid grey, darker = larger) keep black text and coloured outlines legible.
_LIGHT_GREYS = LinearSegmentedColormap.from_list("light_greys", ["#ffffff", "#9a9a9a"])
WINDOW_COLORS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple",
                 "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
CELL_FONT = 9


# ------------------------------------------------------------------------------------- shared drawing


def _numbered_grid(axes, values, *, title, texts=None, decimals=None, origin=(0, 0), windows=(), marks=(),
                   face=None, aspect="equal", xlabel="column", ylabel="row"):
    """Draw a 2-D grid as cells with each value written in its cell, windows outlined on top.

    ``values`` colours the cells (light grey scale; NaN cells stay blank) unless ``face`` gives
    their RGB(A) colours; ``texts`` replaces the written values, else they get ``decimals``
    decimals (default: 2 when every value is below 1 in size, else 1). ``windows`` are
    ``(row, col, height, width, color)`` rectangles, optionally with a 6th item, a dict of
    ``inset`` / ``linestyle`` / ``linewidth``; ``marks`` are ``(row, col, color)`` circles
    around single cells (several marks on one cell shrink so each stays visible). Rows and
    columns are numbered from ``origin``, so a crop or a padded map keeps the input's indices.
    """
    values = torch.as_tensor(values).detach().double().cpu()
    height, width = values.shape
    row0, col0 = origin
    extent = (col0 - 0.5, col0 + width - 0.5, row0 + height - 0.5, row0 - 0.5)
    if face is None:
        finite = values[values.isfinite()]
        low, high = (finite.min().item(), finite.max().item()) if finite.numel() else (0.0, 1.0)
        axes.imshow(values.numpy(), cmap=_LIGHT_GREYS, vmin=low, vmax=max(high, low + 1e-9),
                    extent=extent, aspect=aspect, interpolation="nearest")
    else:
        axes.imshow(face, extent=extent, aspect=aspect, interpolation="nearest")
    if decimals is None:
        decimals = 2 if values.nan_to_num(0.0, 0.0, 0.0).abs().max() < 1 else 1
    for r in range(height):
        for c in range(width):
            value = values[r, c].item()
            text = str(texts[r][c]) if texts is not None else ("" if math.isnan(value) else f"{value:.{decimals}f}")
            if text:
                axes.text(col0 + c, row0 + r, text, ha="center", va="center", fontsize=CELL_FONT)
    for row, col, box_height, box_width, color, *options in windows:
        style = options[0] if options else {}
        inset = style.get("inset", 0.0)
        axes.add_patch(Rectangle((col - 0.5 + inset, row - 0.5 + inset), box_width - 2 * inset,
                                 box_height - 2 * inset, fill=False, edgecolor=color,
                                 linewidth=style.get("linewidth", 2.5), linestyle=style.get("linestyle", "-")))
    seen = {}
    for row, col, color in marks:
        seen[row, col] = seen.get((row, col), -1) + 1
        axes.add_patch(Circle((col, row), 0.44 - 0.09 * seen[row, col], fill=False, edgecolor=color, linewidth=2))
    for set_ticks, count, start in ((axes.set_xticks, width, col0), (axes.set_yticks, height, row0)):
        step = 1 if count <= 24 else 4
        set_ticks(range(start, start + count, step))
    axes.tick_params(labelsize=8)
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)


def _channel_map(tensor, name):
    """The first 2-D map of ``tensor`` (``tensor[0, 0]`` of a 4-D one) as a CPU float64 tensor."""
    if not isinstance(tensor, torch.Tensor) or tensor.dim() < 2:
        raise ValueError(f"{name} must be a tensor with at least 2 dims (..., H, W); got "
                         f"{tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__}")
    while tensor.dim() > 2:
        tensor = tensor[0]
    return tensor.detach().double().cpu()


def _check_int(name, value, minimum):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _spread_positions(height, width):
    """Up to three output cells far apart (first, middle right, bottom left), without repeats."""
    positions = [(0, 0), (height // 2, width - 1), (height - 1, width // 3)]
    return list(dict.fromkeys(positions))


# --------------------------------------------------------------------------------- 1-2 pooling windows


def pool_windows(input, kernel_size=2, stride=1, padding=0, mode="max", crop=6):
    """The top-left ``crop`` x ``crop`` of channel 0, pooled: three windows outlined in three
    colours on the input, the output cells they make outlined in the same colours. For ``"max"``
    each window's winner (torch's ``return_indices``) is circled; for ``"avg"`` the output is the mean."""
    if mode not in ("max", "avg"):
        raise ValueError(f"mode must be 'max' or 'avg', got {mode!r}")
    for name, value, minimum in (("kernel_size", kernel_size, 1), ("stride", stride, 1), ("padding", padding, 0)):
        _check_int(name, value, minimum)
    if padding > kernel_size // 2:
        raise ValueError(f"padding must be at most kernel_size // 2 = {kernel_size // 2}, got {padding}")
    crop_map = _channel_map(input, "input")[:crop, :crop]
    if min(crop_map.shape) + 2 * padding < kernel_size:
        raise ValueError(f"crop must be at least kernel_size - 2 * padding = {kernel_size - 2 * padding}, got {crop}")
    batch = crop_map[None, None]
    if mode == "max":
        output, indices = F.max_pool2d(batch, kernel_size, stride, padding, return_indices=True)
    else:
        output = F.avg_pool2d(batch, kernel_size, stride, padding)
    output = output[0, 0]
    height, width = crop_map.shape
    padded = F.pad(crop_map, (padding,) * 4, value=float("nan"))
    texts = [["pad" if math.isnan(v) else f"{v:.1f}" for v in row] for row in padded.tolist()]
    positions = _spread_positions(*output.shape)
    colors = WINDOW_COLORS[:len(positions)]
    windows = [(stride * i - padding, stride * j - padding, kernel_size, kernel_size, color)
               for (i, j), color in zip(positions, colors)]
    marks = []
    if mode == "max":
        marks = [(*divmod(indices[0, 0, i, j].item(), width), color) for (i, j), color in zip(positions, colors)]
    figure, (input_axes, output_axes) = plt.subplots(
        1, 2, figsize=(9, 4), layout="constrained", width_ratios=[padded.shape[1], output.shape[1]])
    winner = ", winners circled" if mode == "max" else ""
    _numbered_grid(input_axes, padded, texts=texts, origin=(-padding, -padding), windows=windows, marks=marks,
                   title=f"input (channel 0, top-left {height}x{width}){winner}")
    _numbered_grid(output_axes, output, decimals=1, windows=[(i, j, 1, 1, c) for (i, j), c in zip(positions, colors)],
                   title="output: " + ("max" if mode == "max" else "mean") + " of each window")
    padding_text = f", padding {padding}" if padding else ""
    figure.suptitle(f"{mode}_pool2d, kernel {kernel_size}, stride {stride}{padding_text}: "
                    f"{height}x{width} -> {output.shape[0]}x{output.shape[1]}")
    return figure


# ---------------------------------------------------------------------------------- 3 one conv window


def conv_window(input, weight, position=(0, 0), stride=1, dilation=1, bias=None, crop=None):
    """One output pixel of conv2d: the taps it reads on channel 0 of the input outlined, the
    kernel (``weight[0, 0]``), and the output with that pixel outlined; the caption writes the sum.
    ``crop`` (default: enough input for 3 x 3 outputs) is the side of the input's top-left corner drawn."""
    _check_int("stride", stride, 1)
    _check_int("dilation", dilation, 1)
    kernel = _channel_map(weight, "weight")
    reach = [dilation * (k - 1) + 1 for k in kernel.shape]
    image = _channel_map(input, "input")
    crop = max(reach) + 2 * stride if crop is None else crop
    image = image[:crop, :crop]
    if image.shape[0] < reach[0] or image.shape[1] < reach[1]:
        raise ValueError(f"crop must be at least the dilated kernel's reach {max(reach)}, got {crop}")
    bias_value = 0.0 if bias is None else float(torch.as_tensor(bias).detach().flatten()[0])
    output = F.conv2d(image[None, None], kernel[None, None], torch.tensor([bias_value], dtype=image.dtype),
                      stride=stride, dilation=dilation)[0, 0]
    i, j = position
    if not (0 <= i < output.shape[0] and 0 <= j < output.shape[1]):
        raise ValueError(f"position must lie in the {output.shape[0]}x{output.shape[1]} output, got {position}")
    top, left = stride * i, stride * j
    window = image[top:top + reach[0]:dilation, left:left + reach[1]:dilation]
    total = (window * kernel).sum().item() + bias_value
    if not math.isclose(total, output[i, j].item(), rel_tol=1e-9, abs_tol=1e-9):
        raise RuntimeError(f"the drawn window's sum {total} is not F.conv2d's {output[i, j].item()}")
    thin = {"linewidth": 1.5} if max(image.shape) > 10 else {}
    taps = [(top + dilation * a, left + dilation * b, 1, 1, "tab:red", thin)
            for a in range(kernel.shape[0]) for b in range(kernel.shape[1])]
    if dilation > 1:
        taps.append((top, left, reach[0], reach[1], "tab:red", {"linestyle": "--", "linewidth": 1.5}))
    figure, (input_axes, kernel_axes, output_axes) = plt.subplots(
        1, 3, figsize=(10, 4.5), layout="constrained", width_ratios=[image.shape[1], kernel.shape[1], output.shape[1]])
    # a wide input only shows the values the window reads: all of them would not fit in their cells
    texts = None
    if max(image.shape) > 10:
        texts = [[""] * image.shape[1] for _ in range(image.shape[0])]
        for row, col, *_ in taps[:kernel.numel()]:
            texts[row][col] = f"{image[row, col].item():.1f}"
    _numbered_grid(input_axes, image, texts=texts, windows=taps, title=f"input (channel 0): taps of out[{i},{j}]")
    _numbered_grid(kernel_axes, kernel, windows=[(0, 0, *kernel.shape, "tab:red")], title="kernel weight[0, 0]")
    _numbered_grid(output_axes, output, windows=[(i, j, 1, 1, "tab:red")], title="output")
    figure.suptitle(f"conv2d, kernel {kernel.shape[0]}x{kernel.shape[1]}, stride {stride}, dilation {dilation}")
    bias_text = f" + bias ({bias_value:.2f})" if bias is not None else ""
    figure.supxlabel(f"out[{i},{j}] = sum(window * kernel){bias_text} = {total:.2f}", fontsize=11)
    return figure


# ------------------------------------------------------------------------------- 4 dilated conv's taps


def dilated_taps(size=32, kernel_size=5, stride=2, dilation=2, padding=0):
    """Which of ``size`` input pixels each window of a 1-D strided, dilated conv reads: one row per
    output position i, tap a (0..kernel_size-1) written on pixel stride*i + dilation*a - padding;
    below, how often each pixel is read (autograd of F.conv1d's sum), never-read pixels in red."""
    for name, value, minimum in (("size", size, 1), ("kernel_size", kernel_size, 1), ("stride", stride, 1),
                                 ("dilation", dilation, 1), ("padding", padding, 0)):
        _check_int(name, value, minimum)
    outputs = (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    if outputs < 1:
        raise ValueError(f"size {size} is smaller than the dilated kernel's reach {dilation * (kernel_size - 1) + 1}"
                         f" minus 2 * padding; pass a larger size")
    pixels = torch.ones(1, 1, size, dtype=torch.float64, requires_grad=True)
    F.conv1d(pixels, torch.ones(1, 1, kernel_size, dtype=torch.float64), stride=stride, padding=padding,
             dilation=dilation).sum().backward()
    reads = pixels.grad[0, 0]
    tap = torch.full((outputs, size + 2 * padding), -1)
    for i in range(outputs):
        for a in range(kernel_size):
            tap[i, stride * i + dilation * a] = a
    if not torch.equal((tap[:, padding:padding + size] >= 0).sum(0).double(), reads):
        raise RuntimeError("the drawn taps disagree with F.conv1d's gradient")
    never = int((reads == 0).sum())
    palette = plt.get_cmap("Set2")
    face = torch.ones(*tap.shape, 4)
    for a in range(kernel_size):
        face[tap == a] = torch.tensor(palette(a % 8), dtype=face.dtype)
    texts = [[str(a) if a >= 0 else "" for a in row] for row in tap.tolist()]
    figure, (grid_axes, count_axes) = plt.subplots(
        2, 1, figsize=(10, 4.5), layout="constrained", height_ratios=[3, 1.3], sharex=True)
    _numbered_grid(grid_axes, tap, texts=texts, face=face.numpy(), origin=(0, -padding), aspect="auto",
                   title=f"k{kernel_size} s{stride} d{dilation} p{padding}: window i reads pixel "
                         f"{stride}*i + {dilation}*a - {padding} (a written)",
                   xlabel="", ylabel="output position i")
    unread = (reads == 0).nonzero().flatten().tolist()
    for k, column in enumerate(unread):
        grid_axes.axvspan(column - 0.5, column + 0.5, color="tab:red", alpha=0.18, linewidth=0,
                          label="never-read pixel" if k == 0 else None)
    for k, column in enumerate([*range(-padding, 0), *range(size, size + padding)]):
        grid_axes.axvspan(column - 0.5, column + 0.5, color="0.6", alpha=0.3, linewidth=0,
                          label="padding" if k == 0 else None)
    count_axes.bar(range(size), reads.numpy(), color="tab:blue", width=0.8, label="times read")
    count_axes.plot(unread, [0] * len(unread), "x", color="tab:red", markersize=7, mew=2,
                    label=f"never read ({never})")
    count_axes.set_ylim(-0.6, reads.max().item() + 0.6)
    covered = size - never
    count_axes.set(xlabel="input pixel", ylabel="reads",
                   title=f"{never} of {size} pixels never read; in 2-D (same setting on rows and columns) "
                         f"{size * size - covered * covered} of {size * size} "
                         f"({100 * (1 - covered * covered / size ** 2):.0f}%)")
    count_axes.tick_params(labelsize=8)
    figure.legend(loc="outside right center", fontsize=8)
    return figure


# ------------------------------------------------------------------------- 5 transposed conv's stamps


def transpose_stamps(input, weight, strides=(1, 2), crop=3):
    """conv_transpose2d as the kernel stamped from each input pixel, stamps summed. For each stride:
    how many stamps cover each output pixel (an all-ones kernel of weight[0, 0]'s size on a
    ``crop`` x ``crop`` input of ones; the stamps of inputs (0, 0) and (0, 1) outlined, ``stride``
    apart), and the real F.conv_transpose2d output of the input's top-left crop with weight[0, 0]."""
    if not strides or any(not isinstance(s, int) or s < 1 for s in strides):
        raise ValueError(f"strides must be a non-empty tuple of ints >= 1, got {strides!r}")
    small = _channel_map(input, "input")[:crop, :crop]
    kernel = _channel_map(weight, "weight")
    if small.shape[1] < 2:
        raise ValueError(f"crop must be at least 2 (two stamps side by side), got {crop}")
    kernel_height, kernel_width = kernel.shape
    panels = []
    for stride in strides:
        counts = F.conv_transpose2d(torch.ones_like(small)[None, None], torch.ones_like(kernel)[None, None],
                                    stride=stride)[0, 0]
        output = F.conv_transpose2d(small[None, None], kernel[None, None], stride=stride)[0, 0]
        panels += [(stride, counts, True), (stride, output, False)]
    figure, axes_row = plt.subplots(1, len(panels), figsize=(10, 4), layout="constrained",
                                    width_ratios=[grid.shape[1] for _, grid, _ in panels])
    for axes, (stride, grid, is_count) in zip(axes_row, panels):
        if is_count:
            stamps = [(0, 0, kernel_height, kernel_width, "tab:red", {"inset": 0.06}),
                      (0, stride, kernel_height, kernel_width, "tab:blue", {"inset": 0.14})]
            _numbered_grid(axes, grid, decimals=0, windows=stamps,
                           title=f"stride {stride}: stamps per pixel\n(stamps {stride} apart)")
        else:
            # two decimals without the leading zero ("-.14"): small weights make small outputs
            texts = [[f"{v:.2f}".replace("0.", ".", 1) for v in row] for row in grid.tolist()]
            _numbered_grid(axes, grid, texts=texts, title=f"stride {stride}:\nF.conv_transpose2d output")
    handles = [Patch(facecolor="none", edgecolor=color, linewidth=2.5, label=f"stamp of input pixel {pixel}")
               for color, pixel in (("tab:red", (0, 0)), ("tab:blue", (0, 1)))]
    figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9)
    figure.suptitle(f"conv_transpose2d: {kernel_height}x{kernel_width} kernel stamped from each of "
                    f"{small.shape[0]}x{small.shape[1]} input pixels, overlaps summed")
    return figure


# ---------------------------------------------------------------------------------------- 6 roi_pool


def _round_half_away(value):
    """C's std::round: halves go away from zero (torch.round sends them to the even neighbour)."""
    return math.copysign(math.floor(abs(value) + 0.5), value)


def _torchvision_bins(box, output_size, spatial_scale, height, width):
    """Row and column intervals [start, end) of roi_pool's bins, computed as torchvision's kernel
    does in float32: rounded box, inclusive end (+1), floor/ceil bin edges, clipped to the map."""
    scaled = (torch.tensor(box, dtype=torch.float32) * torch.tensor(spatial_scale, dtype=torch.float32)).tolist()
    x1, y1, x2, y2 = (int(_round_half_away(v)) for v in scaled)
    intervals = []
    for start, end, bins, limit in ((y1, y2, output_size[0], height), (x1, x2, output_size[1], width)):
        bin_size = torch.tensor(max(end - start + 1, 1), dtype=torch.float32) / bins
        index = torch.arange(bins, dtype=torch.float32)
        lows = (torch.floor(index * bin_size).long() + start).clamp(0, limit)
        highs = (torch.ceil((index + 1) * bin_size).long() + start).clamp(0, limit)
        intervals.append(list(zip(lows.tolist(), highs.tolist())))
    return intervals


def _naive_bins(box, output_size, spatial_scale, height, width):
    """The bins a student first writes: the scaled box cut into equal float parts, cut points
    truncated to ints, end exclusive (at least one pixel wide), clipped to the map."""
    x1, y1, x2, y2 = (v * spatial_scale for v in box)
    intervals = []
    for start, end, bins, limit in ((y1, y2, output_size[0], height), (x1, x2, output_size[1], width)):
        cuts = [int(start + k * (end - start) / bins) for k in range(bins + 1)]
        intervals.append([(min(max(low, 0), limit), min(max(max(high, low + 1), 0), limit))
                          for low, high in zip(cuts, cuts[1:])])
    return intervals


def _pool_bins(feature_map, row_bins, col_bins):
    """Max and argmax (first in row-major order, like torchvision) of each bin; empty bins give 0."""
    values, winners = torch.zeros(len(row_bins), len(col_bins), dtype=feature_map.dtype), []
    for r, (top, bottom) in enumerate(row_bins):
        for c, (left, right) in enumerate(col_bins):
            region = feature_map[top:bottom, left:right]
            if region.numel():
                flat = region.argmax().item()
                values[r, c] = region.max()
                winners.append((top + flat // region.shape[1], left + flat % region.shape[1]))
            else:
                winners.append(None)
    return values, winners


def _draw_bins(map_axes, output_axes, name, bins, winners, values, feature_map, view, scaled_box, differ):
    """One variant of roi_pool: its bins outlined on the map's ``view`` (rows, columns) with their
    maxima circled and written, the scaled box dashed; its output, cells that differ framed black."""
    (row_bins, col_bins), (rows, cols) = bins, view
    colors = [WINDOW_COLORS[k % len(WINDOW_COLORS)] for k in range(len(row_bins) * len(col_bins))]
    windows = [(r0, c0, r1 - r0, c1 - c0, colors[len(col_bins) * r + c], {"inset": 0.05 + 0.07 * ((r + c) % 3)})
               for r, (r0, r1) in enumerate(row_bins) for c, (c0, c1) in enumerate(col_bins) if r1 > r0 and c1 > c0]
    marks = [(*winner, color) for winner, color in zip(winners, colors) if winner is not None]
    # only the maxima are written: every value would crowd the overlapping bins' outlines
    texts = [[""] * len(cols) for _ in rows]
    for row, col, _ in marks:
        texts[row - rows.start][col - cols.start] = f"{feature_map[row, col].item():.1f}"
    shown = feature_map[rows.start:rows.stop, cols.start:cols.stop]
    _numbered_grid(map_axes, shown, texts=texts, origin=(rows.start, cols.start), windows=windows, marks=marks,
                   title=f"{name} bins,\nmaxima circled")
    x1, y1, x2, y2 = scaled_box
    map_axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="black",
                                 linestyle="--", linewidth=1.5))
    cells = [(r, c, 1, 1, colors[len(col_bins) * r + c], {"inset": 0.08})
             for r in range(len(row_bins)) for c in range(len(col_bins))]
    cells += [(r, c, 1, 1, "black", {"linewidth": 3.5, "inset": -0.02}) for r, c in differ]
    _numbered_grid(output_axes, values, windows=cells, title=f"{name} output\n({len(differ)} cells differ)")


def roi_bins(input, box, output_size=(3, 3), spatial_scale=1.0, channel=0):
    """roi_pool's bins on one channel of the feature map, torchvision's beside a naive version:
    the scaled box dashed, each bin outlined in its colour with its maximum circled, and both
    outputs with the cells where they differ framed in black. ``box`` is (x1, y1, x2, y2) in input
    coordinates, or (batch_index, x1, y1, x2, y2) as torchvision's boxes tensor rows. The drawn
    torchvision bins are checked to reproduce torchvision.ops.roi_pool exactly."""
    box = [float(v) for v in torch.as_tensor(box).flatten().tolist()]
    if len(box) not in (4, 5) or not all(map(math.isfinite, box)):
        raise ValueError(f"box must hold 4 finite values (x1, y1, x2, y2) or 5 (batch_index first), got {box}")
    if not isinstance(input, torch.Tensor) or input.dim() not in (3, 4):
        raise ValueError("input must be a (N, C, H, W) or (C, H, W) feature map")
    if len(output_size) != 2 or any(not isinstance(n, int) or n < 1 for n in output_size):
        raise ValueError(f"output_size must be two ints >= 1, got {output_size!r}")
    batch_index, box = (int(box[0]), box[1:]) if len(box) == 5 else (0, box)
    batch = input.detach().float().cpu()
    batch = batch if batch.dim() == 4 else batch[None]
    feature_map = batch[batch_index, channel]
    height, width = feature_map.shape
    bins = _torchvision_bins(box, output_size, spatial_scale, height, width)
    ours, our_winners = _pool_bins(feature_map, *bins)
    expected = torchvision.ops.roi_pool(batch[batch_index:batch_index + 1], [torch.tensor([box])],
                                        output_size=output_size, spatial_scale=spatial_scale)[0, channel]
    if not torch.equal(ours, expected):
        raise RuntimeError("the drawn bins do not reproduce torchvision.ops.roi_pool")
    naive_bins = _naive_bins(box, output_size, spatial_scale, height, width)
    naive, naive_winners = _pool_bins(feature_map, *naive_bins)
    scaled_box = [v * spatial_scale for v in box]
    intervals = [interval for variant in (bins, naive_bins) for side in variant for interval in side]
    low = min([start for start, _ in intervals] + [math.floor(v) for v in scaled_box])
    high = max([end for _, end in intervals] + [math.ceil(v) + 1 for v in scaled_box])
    view = (range(max(low - 1, 0), min(high + 1, height)), range(max(low - 1, 0), min(high + 1, width)))
    figure, axes_row = plt.subplots(1, 4, figsize=(10, 4.3), layout="constrained",
                                    width_ratios=[len(view[1]), len(view[1]), output_size[1] + 1, output_size[1] + 1])
    differ = (ours != naive).nonzero().tolist()
    _draw_bins(axes_row[0], axes_row[2], "torchvision", bins, our_winners, ours, feature_map, view, scaled_box, differ)
    _draw_bins(axes_row[1], axes_row[3], "naive", naive_bins, naive_winners, naive, feature_map, view, scaled_box,
               differ)
    handles = [Patch(facecolor="none", edgecolor="black", linestyle="--", label="box x spatial_scale"),
               Patch(facecolor="none", edgecolor="black", linewidth=3, label="output differs from torchvision")]
    figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9)
    figure.suptitle(f"roi_pool, box {tuple(round(v, 3) for v in box)}, output {tuple(output_size)}, "
                    f"spatial_scale {spatial_scale:g} (channel {channel})")
    return figure


# -------------------------------------------------------------------------------------- 7 batch_norm


def batch_norm_channels(input, output, bins=40):
    """Per-channel histograms of batch_norm's input ("before") and output ("after"), one colour per
    channel; the shared legend under the panels gives each channel's mean and std before and after."""
    if not isinstance(input, torch.Tensor) or not isinstance(output, torch.Tensor) or input.shape != output.shape \
            or input.dim() < 2:
        raise ValueError("input and output must be tensors of one shape (N, C, ...) with at least 2 dims")
    channels = input.shape[1]
    before = input.detach().double().cpu().transpose(0, 1).reshape(channels, -1)
    after = output.detach().double().cpu().transpose(0, 1).reshape(channels, -1)
    figure, (before_axes, after_axes) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    handles, labels = [], []
    for c in range(channels):
        color = f"C{c % 10}"
        for axes, values in ((before_axes, before[c]), (after_axes, after[c])):
            axes.hist(values.numpy(), bins=bins, histtype="stepfilled", alpha=0.3, color=color)
            axes.hist(values.numpy(), bins=bins, histtype="step", linewidth=1.5, color=color)
        handles.append(Patch(facecolor=color, alpha=0.5, edgecolor=color))
        labels.append(f"channel {c}: before mean {before[c].mean():.3f}, std {before[c].std(correction=0):.3f}\n"
                      f"after mean {after[c].mean():.3f}, std {after[c].std(correction=0):.3f}")
    for axes, name in ((before_axes, "before"), (after_axes, "after")):
        axes.set(title=name, xlabel="value", ylabel="count")
    figure.legend(handles, labels, loc="outside lower center", ncols=min(channels, 3), fontsize=8)
    figure.suptitle("batch_norm: each channel's values before and after normalisation")
    return figure


# ----------------------------------------------------------------------------------------- 8 sigmoid


def _extreme_axis(extreme, points=300):
    """float32 points from -extreme to +extreme, log-spaced from 0.01 in each direction, 0 included."""
    magnitudes = torch.logspace(-2, math.log10(extreme), points, dtype=torch.float64)
    return torch.cat([-magnitudes.flip(0), torch.zeros(1, dtype=torch.float64), magnitudes]).float()


def sigmoid_curves(x_max=10.0, extreme=1000.0):
    """Left: sigmoid and its derivative on [-x_max, x_max]. Right, float32 up to |x| = extreme on a
    symlog axis: the naive 1/(1 + exp(-x)) and its autograd gradient (NaN where exp(-x) overflows)
    against the stable exp(-|x|) form; the shaded x are where the value rounds to exactly 0 or 1."""
    if not x_max > 0 or not extreme > 1:
        raise ValueError(f"x_max must be > 0 and extreme > 1, got {x_max} and {extreme}")
    figure, (near_axes, far_axes) = plt.subplots(1, 2, figsize=(10, 4.5), layout="constrained")
    x = torch.linspace(-x_max, x_max, 401)
    value = torch.sigmoid(x)
    near_axes.plot(x, value, color="C0", label="sigmoid(x)")
    near_axes.plot(x, value * (1 - value), color="C1", label="derivative s(1 - s)")
    near_axes.set(title=f"sigmoid on [-{x_max:g}, {x_max:g}]", xlabel="x", ylabel="value")
    near_axes.grid(alpha=0.3)
    x = _extreme_axis(extreme).requires_grad_()
    naive = 1 / (1 + torch.exp(-x))
    (naive_grad,) = torch.autograd.grad(naive.sum(), x)
    # exp(-|x|) written with where, not abs: abs's gradient at 0 is 0 and would zero the slope there
    small = torch.exp(torch.where(x >= 0, -x, x))
    stable = torch.where(x >= 0, 1 / (1 + small), small / (1 + small))
    (stable_grad,) = torch.autograd.grad(stable.sum(), x)
    x, naive, stable = x.detach(), naive.detach(), stable.detach()
    saturated = (naive == 0) | (naive == 1)
    for edge_low, edge_high in ((x[saturated & (x < 0)], None), (None, x[saturated & (x > 0)])):
        if edge_low is not None and edge_low.numel():
            far_axes.axvspan(-1.5 * extreme, edge_low.max().item(), color="0.85", linewidth=0)
        if edge_high is not None and edge_high.numel():
            far_axes.axvspan(edge_high.min().item(), 1.5 * extreme, color="0.85", linewidth=0,
                             label="naive value exactly 0 or 1")
    far_axes.plot(x, naive, color="C0", linewidth=2.5, label="naive 1/(1+exp(-x))")
    far_axes.plot(x, stable, "--", color="C2", label="stable, from exp(-|x|)")
    far_axes.plot(x, naive_grad, color="C1", linewidth=2.5, label="naive autograd gradient")
    far_axes.plot(x, stable_grad, "--", color="C4", label="stable gradient")
    nan_x = x[naive_grad.isnan()]
    far_axes.plot(nan_x, torch.full_like(nan_x, -0.08), "x", color="C3", markersize=5,
                  label=f"naive gradient NaN (exp(-x) = inf for x < -{math.log(torch.finfo(torch.float32).max):.1f})")
    for sign in (-1, 1):
        far_axes.axvline(sign * extreme, color="black", linestyle=":", linewidth=1.5,
                         label=f"x = +/-{extreme:g}" if sign > 0 else None)
    far_axes.set_xscale("symlog", linthresh=1)
    far_axes.set(xlim=(-1.5 * extreme, 1.5 * extreme), ylim=(-0.15, 1.08), xlabel="x (symlog scale)",
                 ylabel="value / gradient", title=f"float32 up to |x| = {extreme:g}")
    figure.legend(loc="outside lower center", ncols=4, fontsize=8)
    return figure


# ----------------------------------------------------------------------------------- 9 cross_entropy


def cross_entropy_example(logits, target, class_names=None, index=0):
    """One example of cross_entropy. (N, C) logits with (N,) targets (or (C,) with a 0-d target):
    the logits, the softmax probabilities with the target's bar highlighted and -log p[target]
    written; the title compares F.cross_entropy of that example. (N, C, H, W) logits with (N, H, W)
    targets: example ``index``'s per-pixel loss map beside the histogram of those losses and their mean."""
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError("logits and target must be tensors")
    logits, target = logits.detach().float().cpu(), target.detach().cpu()
    if logits.dim() == 1 and target.dim() == 0:
        logits, target = logits[None], target[None]
    if logits.dim() == 4 and target.shape == (logits.shape[0], *logits.shape[2:]):
        return _cross_entropy_map(logits, target, index)
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"logits (N, C) need target (N,), logits (N, C, H, W) need target (N, H, W); "
                         f"got {tuple(logits.shape)} and {tuple(target.shape)}")
    classes = logits.shape[1]
    names = [str(c) for c in range(classes)] if class_names is None else list(class_names)
    if len(names) != classes:
        raise ValueError(f"class_names must name all {classes} classes, got {len(names)}")
    row, label = logits[index], int(target[index])
    probabilities = torch.softmax(row, 0)
    loss = -torch.log_softmax(row, 0)[label].item()
    reference = F.cross_entropy(logits[index:index + 1], target[index:index + 1]).item()
    colors = ["tab:red" if c == label else "0.6" for c in range(classes)]
    figure, (logit_axes, probability_axes) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    logit_axes.bar(names, row.numpy(), color=colors)
    logit_axes.axhline(0, color="black", linewidth=0.8)
    logit_axes.set(title=f"logits of example {index} (target {names[label]} in red)", xlabel="class", ylabel="logit")
    probability_axes.bar(names, probabilities.numpy(), color=colors)
    top = probabilities.max().item()
    probability_axes.set_ylim(0, 1.25 * top)
    probability_axes.annotate(f"p = {probabilities[label]:.3f}\n-log p = {loss:.3f}",
                              (label, probabilities[label].item()), xytext=(0, 4), textcoords="offset points",
                              ha="center", va="bottom", fontsize=9, color="tab:red")
    probability_axes.set(title="softmax probabilities", xlabel="class", ylabel="probability")
    for axes in (logit_axes, probability_axes):
        axes.tick_params(axis="x", labelsize=8, rotation=45 if max(map(len, names)) > 3 else 0)
    figure.suptitle(f"cross_entropy of example {index}: -log p[{names[label]}] = {loss:.4f}  "
                    f"(F.cross_entropy: {reference:.4f})")
    return figure


def _cross_entropy_map(logits, target, index):
    """Per-pixel cross-entropy of example ``index`` as a map, and the histogram of those losses."""
    losses = F.cross_entropy(logits[index:index + 1], target[index:index + 1], reduction="none")[0]
    mean = F.cross_entropy(logits[index:index + 1], target[index:index + 1]).item()
    batch_mean = F.cross_entropy(logits, target).item()
    figure, (map_axes, histogram_axes) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    image = map_axes.imshow(losses.numpy(), cmap="magma", interpolation="nearest")
    figure.colorbar(image, ax=map_axes, label="-log p[target]")
    map_axes.set(title=f"per-pixel loss, example {index}", xlabel="column", ylabel="row")
    histogram_axes.hist(losses.flatten().numpy(), bins=40, color="tab:blue", alpha=0.7, label="pixels")
    histogram_axes.axvline(mean, color="tab:red", linewidth=2, label=f"mean = F.cross_entropy = {mean:.4f}")
    histogram_axes.set(title=f"its {losses.numel()} pixel losses", xlabel="-log p[target]", ylabel="pixels")
    figure.legend(loc="outside lower center", ncols=2, fontsize=9)
    figure.suptitle(f"cross_entropy, {logits.shape[1]} classes per pixel: example {index} mean {mean:.4f}, "
                    f"whole batch {batch_mean:.4f}")
    return figure


# ----------------------------------------------------------------------------------------- 10 flatten


def flatten_order(shape=(2, 3, 3), start_dim=0, end_dim=-1):
    """A small tensor numbered in memory order (0, 1, 2, ...), drawn as its 2-D slices side by side,
    one colour per slice, and torch.flatten's result below with the same numbers and colours: the
    order never changes, only the dims start_dim..end_dim merge into one."""
    shape = tuple(shape)
    if not 2 <= len(shape) <= 4 or math.prod(shape) > 64 or min(shape) < 1:
        raise ValueError(f"shape must have 2 to 4 positive dims and at most 64 elements to draw, got {shape}")
    numbers = torch.arange(math.prod(shape)).reshape(shape)
    flat = torch.flatten(numbers, start_dim, end_dim)
    height, width = shape[-2:]
    slices = numbers.reshape(-1, height, width)
    leading = list(torch.cartesian_prod(*[torch.arange(n) for n in shape[:-2]]).reshape(len(slices), -1).tolist()) \
        if len(shape) > 2 else [[]]
    palette = plt.get_cmap("Pastel1")

    def faces(grid):
        return torch.tensor([[palette((n // (height * width)) % 9) for n in row] for row in grid.tolist()]).numpy()

    drawn = flat.reshape(1, -1) if flat.dim() == 1 else flat.reshape(-1, flat.shape[-1])
    figure = plt.figure(figsize=(10, 4), layout="constrained")
    grid = figure.add_gridspec(2, len(slices), height_ratios=[height, max(drawn.shape[0], 1.5)])
    for k, (block, index) in enumerate(zip(slices, leading)):
        name = "x" + (f"[{', '.join(map(str, index))}]" if index else "")
        _numbered_grid(figure.add_subplot(grid[0, k]), block, texts=block.tolist(), face=faces(block),
                       title=name, xlabel=f"dim {len(shape) - 1}", ylabel=f"dim {len(shape) - 2}")
    bottom = figure.add_subplot(grid[1, :])
    _numbered_grid(bottom, drawn, texts=drawn.tolist(), face=faces(drawn),
                   title=f"flattened {tuple(flat.shape)}: numbers = position in memory",
                   xlabel="index in the flattened vector" if flat.dim() == 1 else f"dim {flat.dim() - 1} of the result",
                   ylabel="" if flat.dim() == 1 else "rows (other dims)")
    if flat.dim() == 1:
        bottom.set_yticks([])
    first, last = range(len(shape))[start_dim], range(len(shape))[end_dim]
    figure.suptitle(f"torch.flatten(x, start_dim={start_dim}, end_dim={end_dim}): {shape} -> {tuple(flat.shape)}"
                    f" (dims {first}..{last} merge)")
    return figure


# -------------------------------------------------------------------------------------- 11 mse_loss


def mse_residuals(input, target, shown=12):
    """mse_loss as residuals: input against target with the line input = target (the ``shown``
    largest residuals drawn as red segments), and the histogram of squared errors with their mean,
    which is F.mse_loss."""
    if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor) or input.shape != target.shape:
        raise ValueError("input and target must be tensors of the same shape (mse_loss would broadcast them)")
    input, target = input.detach().double().cpu().flatten(), target.detach().double().cpu().flatten()
    squared = (input - target) ** 2
    loss = F.mse_loss(input, target).item()
    if not math.isclose(squared.mean().item(), loss, rel_tol=1e-9):
        raise RuntimeError("mean squared error disagrees with F.mse_loss")
    figure, (scatter_axes, histogram_axes) = plt.subplots(1, 2, figsize=(10, 4.3), layout="constrained")
    scatter_axes.scatter(target.numpy(), input.numpy(), s=4, alpha=0.4, color="tab:blue", label="elements")
    low, high = min(input.min(), target.min()).item(), max(input.max(), target.max()).item()
    scatter_axes.plot([low, high], [low, high], color="black", linewidth=1, label="input = target")
    for k, element in enumerate(squared.topk(min(shown, squared.numel())).indices.tolist()):
        scatter_axes.plot([target[element], target[element]], [target[element], input[element]], color="tab:red",
                          linewidth=1.5, label=f"{shown} largest residuals" if k == 0 else None)
    scatter_axes.set(title="input against target", xlabel="target", ylabel="input", aspect="equal")
    histogram_axes.hist(squared.numpy(), bins=50, color="tab:green", alpha=0.7, label="squared errors")
    histogram_axes.axvline(loss, color="tab:purple", linewidth=2, label=f"mean = F.mse_loss = {loss:.4f}")
    histogram_axes.set_yscale("log")
    histogram_axes.set(title="(input - target)^2", xlabel="squared error", ylabel="elements (log scale)")
    figure.legend(loc="outside lower center", ncols=5, fontsize=8)
    figure.suptitle(f"mse_loss = mean of {squared.numel()} squared errors = {loss:.4f}")
    return figure
