"""Side-by-side comparison of an op's output with torch's, as the Q1 notebook prints it.

`verdict` prints both tensors' shapes, a small slice of each, and one verdict line; it raises
`AssertionError` when they differ, so a notebook that disagrees with torch stops there.
"""

import torch

# Tolerances per dtype: float32 sums taken in another order differ in the last bits.
TOLERANCES = {
    torch.float16: dict(rtol=1e-3, atol=1e-3),
    torch.bfloat16: dict(rtol=1e-2, atol=1e-2),
    torch.float32: dict(rtol=1e-4, atol=1e-5),
    torch.float64: dict(rtol=1e-9, atol=1e-11),
}


def tolerances(dtype, rtol=None, atol=None):
    """Return `(rtol, atol)` for `dtype`; explicit values win. Integer dtypes compare exactly."""
    default = TOLERANCES.get(dtype, dict(rtol=0.0, atol=0.0))
    return (default["rtol"] if rtol is None else rtol, default["atol"] if atol is None else atol)


def max_abs_diff(ours, theirs):
    """Largest |ours - theirs| over all elements (NaN where exactly one side is NaN), as a float."""
    if ours.numel() == 0:
        return 0.0
    difference = (ours.double() - theirs.double()).abs()
    both_nan = ours.isnan() & theirs.isnan()
    both_same_inf = ours.isinf() & (ours == theirs)
    difference = difference.masked_fill(both_nan | both_same_inf, 0.0)
    return difference.max().item()


def mismatch(ours, theirs, rtol=None, atol=None):
    """Return why `ours` differs from `theirs` (shape, dtype or values), or None when they agree."""
    if not isinstance(ours, torch.Tensor):
        return f"ours is a {type(ours).__name__}, torch's is a Tensor"
    if ours.shape != theirs.shape:
        return f"shape {tuple(ours.shape)} != {tuple(theirs.shape)}"
    if ours.dtype != theirs.dtype:
        return f"dtype {ours.dtype} != {theirs.dtype}"
    rtol, atol = tolerances(theirs.dtype, rtol, atol)
    if not torch.allclose(ours, theirs, rtol=rtol, atol=atol, equal_nan=True):
        return f"values differ: max |diff| = {max_abs_diff(ours, theirs):.3g} (rtol={rtol}, atol={atol})"
    return None


def preview(tensor, rows=3, cols=5):
    """The top-left `rows` x `cols` corner of the first matrix of `tensor` (first index elsewhere)."""
    if tensor.dim() == 0:
        return tensor
    if tensor.dim() == 1:
        return tensor[:cols]
    leading = (0,) * (tensor.dim() - 2)
    return tensor[leading][:rows, :cols]


def slice_text(tensor):
    """The index text of what `preview` shows of `tensor`, such as "[0, 0, :3, :5]"."""
    if tensor.dim() == 0:
        return ""
    if tensor.dim() == 1:
        return "[:5]"
    return "[" + ", ".join(["0"] * (tensor.dim() - 2) + [":3", ":5"]) + "]"


def verdict(label, ours, theirs, *, rtol=None, atol=None, show=True):
    """Print `ours` beside torch's `theirs` and a one-line verdict; raise AssertionError if they differ.

    With `show`, prints each tensor's shape and dtype and a slice of both. The verdict line gives the
    largest absolute difference and whether the two are allclose at the dtype's tolerance.
    Returns nothing, so that a cell ending with a verdict shows only what it printed.
    """
    problem = mismatch(ours, theirs, rtol, atol)
    if show and isinstance(ours, torch.Tensor):
        with torch.no_grad():
            print(f"ours : shape {tuple(ours.shape)}, {ours.dtype}")
            print(f"torch: shape {tuple(theirs.shape)}, {theirs.dtype}")
            if ours.shape == theirs.shape and ours.numel():
                where = slice_text(ours)
                print(f"ours{where}:\n{preview(ours)}")
                print(f"torch{where}:\n{preview(theirs)}")
    difference = max_abs_diff(ours, theirs) if problem is None or problem.startswith("values") else float("nan")
    print(f"{label}: max |ours - torch| = {difference:.1e}, allclose: {'no' if problem else 'yes'}")
    if problem:
        raise AssertionError(f"{label}: ours differs from torch: {problem}")


class attempt:
    """``with attempt("conv2d"): ...`` runs a check of the function you write for `name`; while that function
    still raises NotImplementedError (as in the student version of the notebook), it prints
    "conv2d: not implemented yet" instead of stopping the notebook. Any other error propagates."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None and issubclass(kind, NotImplementedError):
            print(f"{self.name}: not implemented yet")
            return True
        return False
