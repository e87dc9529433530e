"""helpers.figures: each Q1 picture is a small, labelled, warning-free Figure whose drawn values are torch's."""

import matplotlib

matplotlib.use("Agg")

import math  # noqa: E402
import warnings  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from helpers import figures  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _seeded(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _create(function, *args, **kwargs):
    """Call a figure function with every warning raised as an error; it returns a Figure."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = function(*args, **kwargs)
    assert isinstance(figure, Figure)
    return figure


def _draw(function, *args, **kwargs):
    """``_create``, then render the figure (warnings still errors) and check what every figure must
    be: small, titled, labelled, fonts >= 8 pt, legends off the axes. Rendering is most of a test's
    time, so each function's layout is checked on one setting and its variants are only created."""
    figure = _create(function, *args, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure.canvas.draw()
    width, height = figure.get_size_inches()
    assert width <= 10 and height <= 4.5
    renderer = figure.canvas.get_renderer()
    plots = [axes for axes in figure.axes if not hasattr(axes, "_colorbar")]
    for axes in figure.axes:
        if axes not in plots:
            assert axes.get_ylabel(), "a colorbar says what its colours mean"
            continue
        assert axes.get_title(), "every axes has a title"
        for tick_labels, label in ((axes.get_xticklabels(), axes.get_xlabel()),
                                   (axes.get_yticklabels(), axes.get_ylabel())):
            if any(tick.get_visible() and tick.get_text() for tick in tick_labels):
                assert label, f"axes {axes.get_title()!r} has numbered ticks without a label"
    for text in figure.findobj(Text):
        if text.get_visible() and text.get_text():
            assert text.get_fontsize() >= 8, text.get_text()
    legends = list(figure.legends) + [axes.get_legend() for axes in plots if axes.get_legend()]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not any(box.overlaps(axes.get_window_extent(renderer)) for axes in plots), "legend over an axes"
    return figure


def _axes(figure, title_start):
    (axes,) = [axes for axes in figure.axes if axes.get_title().startswith(title_start)]
    return axes


def _texts(axes):
    return [text.get_text() for text in axes.texts]


def _formatted(tensor, decimals=1):
    return [f"{value:.{decimals}f}" for value in tensor.flatten().tolist()]


def test_pool_windows_max_writes_torchs_output_and_circles_its_winners():
    input = _seeded(1, 3, 32, 32)
    figure = _draw(figures.pool_windows, input)
    expected, indices = F.max_pool2d(input[:, :1, :6, :6], kernel_size=2, stride=1, return_indices=True)
    assert _texts(_axes(figure, "output")) == _formatted(expected)
    assert figure.get_suptitle() == "max_pool2d, kernel 2, stride 1: 6x6 -> 5x5"
    circles = [patch.center for patch in _axes(figure, "input").patches if isinstance(patch, plt.Circle)]
    shown = [(0, 0), (2, 4), (4, 1)]  # the three windows drawn on a 5x5 output
    assert [(int(y), int(x)) for x, y in circles] == [divmod(indices[0, 0, i, j].item(), 6) for i, j in shown]


@pytest.mark.parametrize("mode, pool", [("max", F.max_pool2d), ("avg", F.avg_pool2d)])
def test_pool_windows_with_padding_writes_torchs_output(mode, pool):
    input = _seeded(1, 3, 32, 32)
    figure = _create(figures.pool_windows, input, kernel_size=3, stride=2, padding=1, mode=mode)
    assert _texts(_axes(figure, "output")) == _formatted(pool(input[:, :1, :6, :6], 3, 2, 1))
    assert _texts(_axes(figure, "input")).count("pad") == 8 * 8 - 6 * 6


def test_conv_window_caption_is_conv2d_output():
    input, weight, bias = _seeded(1, 3, 32, 32), _seeded(6, 3, 3, 3, seed=1), _seeded(6, seed=2)
    figure = _create(figures.conv_window, input, weight, position=(1, 2), bias=bias)
    expected = F.conv2d(input[:, :1, :5, :5], weight[:1, :1], bias[:1])[0, 0, 1, 2].item()
    assert figure._supxlabel.get_text().endswith(f"= {expected:.2f}")


def test_conv_window_dilated_outlines_the_taps():
    input, weight = _seeded(1, 3, 32, 32), _seeded(6, 3, 5, 5, seed=1)
    figure = _draw(figures.conv_window, input, weight, position=(1, 1), stride=2, dilation=2)
    expected = F.conv2d(input[:, :1, :13, :13], weight[:1, :1], stride=2, dilation=2)[0, 0, 1, 1].item()
    assert figure._supxlabel.get_text().endswith(f"= {expected:.2f}")
    assert len(_texts(_axes(figure, "input"))) == 25  # a 13x13 input writes only the 5x5 values read


def test_dilated_taps_counts_sixteen_never_read_pixels():
    figure = _draw(figures.dilated_taps)
    pixels = torch.ones(1, 1, 32, requires_grad=True)
    F.conv1d(pixels, torch.ones(1, 1, 5), stride=2, dilation=2).sum().backward()
    counts_axes = _axes(figure, "16 of 32 pixels never read")
    assert [bar.get_height() for bar in counts_axes.patches] == pixels.grad.flatten().tolist()
    assert "768 of 1024 (75%)" in counts_axes.get_title()
    assert len(_axes(figure, "k5 s2 d2").get_images()[0].get_array()) == 12


def test_transpose_stamps_overlap_counts_and_output():
    input, weight = _seeded(1, 3, 32, 32), _seeded(3, 4, 3, 3, seed=1)
    figure = _draw(figures.transpose_stamps, input, weight)
    for stride in (1, 2):
        counts = [int(text) for text in _texts(_axes(figure, f"stride {stride}: stamps"))]
        assert sum(counts) == 9 * 9  # input.numel() * kernel.numel() of the 3x3 ones
        output = F.conv_transpose2d(input[:, :1, :3, :3], weight[:1, :1], stride=stride)
        drawn = [float(text) for text in _texts(_axes(figure, f"stride {stride}:\nF.conv"))]
        assert drawn == pytest.approx(output.flatten().tolist(), abs=0.005 + 1e-9)


@pytest.mark.parametrize("spatial_scale, differing", [(1.0, 7), (0.5, 9)])
def test_roi_bins_reproduce_torchvision(spatial_scale, differing):
    input = _seeded(1, 3, 32, 32)
    draw = _draw if spatial_scale == 1.0 else _create
    figure = draw(figures.roi_bins, input, [0, 0, 0, 6.5, 6.5], spatial_scale=spatial_scale)
    expected = torchvision.ops.roi_pool(input, torch.tensor([[0, 0, 0, 6.5, 6.5]]), (3, 3), spatial_scale)
    assert _texts(_axes(figure, "torchvision output")) == _formatted(expected[0, 0])
    assert f"({differing} cells differ)" in _axes(figure, "naive output").get_title()


def test_roi_bins_geometry_matches_torchvision_on_random_boxes():
    generator = torch.Generator().manual_seed(3)
    feature_map = torch.randn(1, 1, 20, 24, generator=generator)
    for case in range(60):
        corners = torch.rand(4, generator=generator) * 400 - 60
        box = [min(corners[0], corners[2]).item(), min(corners[1], corners[3]).item(),
               max(corners[0], corners[2]).item(), max(corners[1], corners[3]).item()]
        output_size = tuple(torch.randint(1, 5, (2,), generator=generator).tolist())
        scale = (1 / 16, 0.05, 1 / 8, 0.5)[case % 4]
        rows, cols = figures._torchvision_bins(box, output_size, scale, 20, 24)
        values, _ = figures._pool_bins(feature_map[0, 0], rows, cols)
        expected = torchvision.ops.roi_pool(feature_map, [torch.tensor([box])], output_size, scale)[0, 0]
        assert torch.equal(values, expected), (box, output_size, scale)


def test_batch_norm_channels_legend_gives_torchs_statistics():
    input = _seeded(4, 3, 8, 8)
    mean, var = torch.tensor([0.5, -0.2, 0.1]), torch.tensor([0.6, 1.4, 0.9])
    output = F.batch_norm(input, mean, var)
    figure = _draw(figures.batch_norm_channels, input, output)
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    for c, label in enumerate(labels):
        assert f"after mean {output[:, c].mean():.3f}, std {output[:, c].std(correction=0):.3f}" in label
    assert [axes.get_title() for axes in figure.axes] == ["before", "after"]


def test_sigmoid_curves_mark_the_naive_nan_gradient():
    figure = _draw(figures.sigmoid_curves)
    lines = {line.get_label(): line for line in _axes(figure, "float32").get_lines()}
    stable = lines["stable, from exp(-|x|)"]
    x = torch.as_tensor(stable.get_xdata())
    assert x.dtype == torch.float32 and x.min() == -1000 and x.max() == 1000
    assert torch.allclose(torch.as_tensor(stable.get_ydata()), torch.sigmoid(x), rtol=1e-6, atol=1e-30)
    leaf = x.clone().requires_grad_()
    (naive_grad,) = torch.autograd.grad((1 / (1 + torch.exp(-leaf))).sum(), leaf)
    (nan_markers,) = [line for label, line in lines.items() if label.startswith("naive gradient NaN")]
    assert torch.equal(torch.as_tensor(nan_markers.get_xdata()), x[naive_grad.isnan()])
    assert naive_grad[0].isnan()  # at x = -1000
    (stable_grad,) = [line for label, line in lines.items() if label == "stable gradient"]
    slope = torch.as_tensor(stable_grad.get_ydata())
    assert slope.isfinite().all() and torch.allclose(slope, torch.sigmoid(x) * (1 - torch.sigmoid(x)), atol=1e-7)


def test_cross_entropy_example_title_matches_torch():
    logits, target = _seeded(8, 10), torch.arange(8)
    figure = _draw(figures.cross_entropy_example, logits, target, index=2)
    expected = F.cross_entropy(logits[2:3], target[2:3]).item()
    assert f"= {expected:.4f}" in figure.get_suptitle() and f"F.cross_entropy: {expected:.4f}" in figure.get_suptitle()


def test_cross_entropy_example_per_pixel_map():
    logits = _seeded(2, 3, 32, 32)
    target = torch.randint(3, (2, 32, 32), generator=torch.Generator().manual_seed(1))
    figure = _draw(figures.cross_entropy_example, logits, target)
    drawn = torch.as_tensor(_axes(figure, "per-pixel loss").get_images()[0].get_array())
    assert torch.allclose(drawn, F.cross_entropy(logits[:1], target[:1], reduction="none")[0])
    mean = F.cross_entropy(logits[:1], target[:1]).item()
    assert f"mean = F.cross_entropy = {mean:.4f}" in [text.get_text() for text in figure.legends[0].get_texts()]


@pytest.mark.parametrize("shape, start_dim, end_dim", [((2, 3, 3), 0, -1), ((1, 2, 2, 3), 1, 2)])
def test_flatten_order_numbers_follow_torch_flatten(shape, start_dim, end_dim):
    draw = _draw if shape == (2, 3, 3) else _create
    figure = draw(figures.flatten_order, shape, start_dim, end_dim)
    flat = torch.flatten(torch.arange(math.prod(shape)).reshape(shape), start_dim, end_dim)
    assert _texts(_axes(figure, "flattened")) == [str(n) for n in flat.flatten().tolist()]
    assert f"-> {tuple(flat.shape)}" in figure.get_suptitle()


def test_mse_residuals_mean_is_mse_loss():
    input, target = _seeded(1, 3, 32, 32), _seeded(1, 3, 32, 32, seed=1)
    figure = _draw(figures.mse_residuals, input, target)
    loss = F.mse_loss(input, target).item()
    assert f"mean = F.mse_loss = {loss:.4f}" in [text.get_text() for text in figure.legends[0].get_texts()]


@pytest.mark.parametrize("call, name", [
    (lambda: figures.pool_windows(torch.zeros(6, 6), mode="min"), "mode"),
    (lambda: figures.pool_windows(torch.zeros(6), 2), "input"),
    (lambda: figures.conv_window(torch.zeros(6, 6), torch.zeros(3, 3), position=(9, 0)), "position"),
    (lambda: figures.dilated_taps(size=4), "size"),
    (lambda: figures.transpose_stamps(torch.zeros(3, 3), torch.zeros(3, 3), strides=(0,)), "strides"),
    (lambda: figures.roi_bins(torch.zeros(1, 1, 8, 8), [1, 2, 3]), "box"),
    (lambda: figures.batch_norm_channels(torch.zeros(2, 3), torch.zeros(2, 4)), "input and output"),
    (lambda: figures.cross_entropy_example(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long)), "target"),
    (lambda: figures.flatten_order((100, 100)), "shape"),
    (lambda: figures.mse_residuals(torch.zeros(3), torch.zeros(4)), "input and target"),
])
def test_bad_arguments_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
    assert not plt.get_fignums(), "refused before drawing"
