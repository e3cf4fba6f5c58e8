"""Which implementation runs: the registry of ``conv1d/2d/3d`` paths, the choice between them,
and the backend's layout policy. The only code in jaxconv that asks JAX for the backend.

The choice, in words (the measurements behind it are in docs/BENCHMARKS.md):

- ``conv2d(impl="auto")`` runs ``"vjp"`` on CPU and GPU wherever it applies (stride 1,
  dilation 1, groups 1, each side's padding smaller than the kernel, float32/float64), else
  ``"lax"``. Inside a scanned training loop XLA:CPU's gradient convolutions fall to a slow path
  that the vjp rules avoid; in a plain jit the two are close, and a call cannot know whether it
  is traced inside a loop, so vjp wherever it applies. On GPU vjp is a little faster too.
  float16/bfloat16 stay on lax (the one-channel tap sum would accumulate in low precision), and
  so does padding >= kernel (outputs made of padding only). TPU (not measured): lax.
- ``"vjp"`` runs the NHWC rule (:mod:`~jaxconv.kernels.nhwc`; NCHW is transposed there and
  back, and XLA folds the transposes into neighbouring fusions), or for CHWN input with few
  channels the batch-last rule (:mod:`~jaxconv.kernels.batch_last`; wide CHWN layers take the
  NHWC rule between transposes); lax for geometries it does not cover.
- ``conv_transpose1d/2d/3d(impl="auto")`` run the stride phases on CPU
  (:mod:`~jaxconv.kernels.phases`: a stride-1 convolution per phase, or one for all, a pixel
  shuffle, and derivatives in XLA:CPU's fast forms): XLA's own transposed convolution (the
  input dilated by the stride) and its weight gradient are many times slower there, also at
  stride 1 without padding. 3-D ones in NCDHW/NDHWC fold the depth into the batch and run
  ONE 2-D transposed conv that way, then add the depth taps' planes
  (:mod:`~jaxconv.kernels.transpose_planes`): XLA:CPU's 3-D convolutions are the slow ones.
  GPU and TPU (not measured): lax.
- On CPU, depthwise convs (``groups == in_channels > 1``, any rank and layout, any float
  dtype: float16/bfloat16 are summed in float32 and rounded once) run ``"depthwise"``
  (:mod:`~jaxconv.kernels.depthwise`: a sum over taps of strided slices, the weight gradient
  reduced chunk by chunk); XLA:CPU's grouped convolutions were 3-200x slower, forward or
  backward, in the measured 1-D, 2-D and 3-D layers (bfloat16 too). One input channel
  (groups == C == 1) is an ordinary conv and keeps the rules above. Its input gradient sums
  each stride phase's own taps (:func:`~jaxconv.kernels.windows.phase_taps`), and where
  :func:`~jaxconv.kernels.depthwise.joint_wins` both gradients come from one chunk loop:
  forward+backward of the family's 3x3 layers took 0.61x (stride 2) and 0.64x (stride 1) the
  previous rule's time channels first on one core, 0.72x NHWC at stride 2, 0.50-0.61x a
  3-D stride-2 layer; the rest 0.91-1.03x.
- On CPU, float32/float64 3-D convs with groups 1 run ``"planes"``
  (:mod:`~jaxconv.kernels.planes`: ONE 2-D conv over the depth taps stacked on the channel
  axis, through this dispatch), several times faster than XLA's 3-D convolution forward and
  backward. Not for 1x1x1 kernels (lax was as fast backward and faster forward), nor other
  groups (the stacked 2-D conv is grouped too, and XLA:CPU's grouped gradients were slower
  than its 3-D ones). float16/bfloat16 stay on lax; GPU/TPU: lax (not measured).
- Among those, float32 layers whose planes 2-D conv would be unpadded stride 1 (run padded
  and cropped there), or strided with output planes of 16x16 or more, take
  ``"plane_patches"`` (:mod:`~jaxconv.kernels.plane_patches`: patch matrices of a few output
  rows at a time, one YNNPACK matrix product each; the weight gradient the same chunk loop,
  the input gradient the planes'): its forward took 0.47-0.97x the planes' time there on one
  core (the family conv3d rows 0.56-0.62x at stride 1, 0.60-0.70x at stride 2; on 2 threads
  0.79x and 0.90x), and forward+backward (input and weight gradients) 0.87-0.92x at stride 1
  and 0.65-0.74x at stride 2 on the family rows, 0.62-1.01x on other layers of these kinds
  (1 to 128 channels, k3 and k5; one core; on 2 threads not measured); three such steps
  inside ``lax.scan`` 0.88x and 0.11x (there the planes' strided gradients took 1.9 s a
  step, this path 0.21 s). Elsewhere the forward measurements went both ways (padded
  stride-1 layers 0.62-1.31x, strided 8x8 output planes 1.09-1.17x), so those stay on the
  planes; float64 is not measured and stays there too.
- Among float32 3-D convs, those with a 3x3 (H, W) window at stride 1 and dilation 1 there,
  at least 32 stacked input (kd*C) and output channels and output planes of at least 6x6
  (:func:`~jaxconv.kernels.plane_winograd.plane_winograd_wins`) take ``"plane_patches"``
  too, padded or not, and its values come from Winograd's F(3x3, 3x3) over the stacked
  depth planes (:mod:`~jaxconv.kernels.plane_winograd`): 25 products per 3x3 tile of a
  plane's outputs instead of 81. On the family's conv3d 4x16x32^3 -> 32 k3 layer (one
  core, docs/BENCHMARKS.md) NDHWC took 0.53-0.55x the chunked patch matrices' forward time
  and 0.79-0.94x forward+backward; NCDHW, which moves to channels last and back, about the
  same forward and 0.78-0.96x forward+backward; padded by one, 0.61x (NCDHW) and 0.74-0.77x
  (NDHWC) the depth planes' forward+backward time, 0.83-0.94x forward.
  Its float32 error is a few times a direct convolution's, and a non-finite input reaches
  the outputs of its tiles, as for the 2-D Winograd path below.
- On CPU, float32 NCL ``conv1d`` at stride 1 with groups 1 and a kernel of 2 taps or more
  runs ``"tap_outputs"`` (:mod:`~jaxconv.kernels.tap_outputs`: per batch item one matrix
  product with the taps stacked on the output rows, then k shifted row slices added; XLA's
  conv's derivatives): XLA:CPU's NCL convolution ran 0.96-1.45x its forward time (conv1d
  32x64x4000 k9: 1.43x; forward+backward 1.04-1.14x; on 2 threads 1.00x forward and
  1.06x forward+backward), and transposing to NLC and back cost as much again. Strided
  1-D convs (every position computed, half kept: 1.5x slower), NLC (XLA's NLC conv is as
  fast) and float64 (not measured) stay on lax.
- On CPU, float32 2-D convs with a 3x3 kernel, stride 1, dilation 1, groups 1, at least 32
  input and output channels and outputs of at least 6x6, NCHW or NHWC, run ``"winograd"``
  (:mod:`~jaxconv.kernels.winograd`: F(3x3, 3x3), 25 products for 9 outputs instead of 81,
  as batched matrix products over chunks of the batch, and both gradients the same way).
  On the book's ResNet-18 layers (batch 64, 24x24 to 6x6, one core) the forward took
  0.43-0.55x the NHWC rule's time and forward+backward 0.45-0.85x; the book's ResNet-18
  training step 0.89x PyTorch's on one core (1.15x before), 1.07x on 2 threads (1.20x).
  At 16 channels and on 3x3 outputs the measurements went both ways, so those keep the
  rules above. Its float32 error is a few times a direct convolution's (still ~1e-5 of
  the outputs), and its transforms mix neighbouring inputs (a non-finite value makes every
  output of its tiles non-finite, where a direct convolution keeps it to the outputs whose
  window holds it); float64 keeps the direct paths.
- On CPU, float32/float64 strided 2-D convs (a stride > 1, dilation 1, groups 1, any
  layout) run ``"phases"`` (:mod:`~jaxconv.kernels.strided`: the sum over the input's stride
  phases of unpadded stride-1 convs, each through this dispatch, so the rules above give
  their derivatives; inputs with few channels, such as the networks' one-channel stems, as
  one conv of the phases stacked on the channel axis). Inside ``lax.scan`` XLA:CPU ran lax's
  gradients of the book's ResNet-18 strided layers at 19-59x their plain-jit time; with
  phases the NHWC ResNet-18 step inside ``lax.scan`` took 1.30 s on one core (0.88x
  PyTorch's), and ``jaxconv train --model resnet18`` an epoch of 1,024 images 14.0 s
  instead of 226.5 s. Jitted alone the NHWC step was as fast as with lax (1.37 s against
  1.36 s); the NCHW step slower (1.64 -> 2.15 s in one A/B: its stem's batch-norm sums read
  the transposed phase conv output), but inside ``lax.scan`` 2.08 s a step against lax's
  17.07 s. A call cannot
  know whether it runs in a loop (as for ``"vjp"``), and training runs in one.
  float16/bfloat16, GPU and TPU: lax (not measured).
- 2-D max pooling on CPU takes the tiled derivative for windows that tile the input
  (:mod:`~jaxconv.kernels.maxpool`); the general derivative (overlapping windows, e.g.
  ResNet's 3x3 stride 2) stores each window's selected tap on CPU
  (:mod:`~jaxconv.kernels.stored`), for 2-D and 3-D windows the pooled values too
  (:func:`stores_max_pool_values`), and in channels-first layouts takes the tangent's taps
  from the stride phases (:func:`max_pool_tangent_by_phases`).
- 1-D max pooling's values on CPU are the maximum of the window's taps sliced from the
  unpadded input (:func:`max_pool_values_by_taps`); elsewhere ``reduce_window``.
- Adaptive max pooling stores its indices on CPU (:func:`stores_max_pool_selection`).
- Adaptive average pooling over bins that do not tile their axis (:func:`adaptive_avg_path`):
  bins up to :data:`ADAPTIVE_AVG_MAX_SLICES` wide sum static slices (JAX's derivative: one
  pad per tap); wider ones gather their elements, tap by tap up to
  :data:`ADAPTIVE_AVG_MAX_TAP_GATHERS` and all at once beyond, and their derivative gathers
  each element's bins. The slices' backward grows with the width: on one core, one axis,
  forward+backward, 8x32x128x16 -> 7 (19 wide) took 8.8 ms against the gathers' 2.3 ms,
  8x32x1024x4 -> 7 (147 wide) 152 ms against 10 ms, 8x32x1024 -> 100 (12 wide) 3.1 ms against
  1.8 ms; at 4 to 6 wide (the opset's 2-D and 3-D rows) the slices were as fast or faster
  (8x32x16^3 -> 5 on the first axis 8.1 against 10.6 ms). The gathers' forward tap by tap
  took 0.3x the one gather's at 12 wide, the one gather 0.5x the taps' at 147.
- Average pooling on CPU sums the tangent's taps (stride phases where strided) for windows
  that do not tile the input (:func:`avg_pool_tangent_by_taps`); elsewhere JAX's rule.
- Training runs LeNet in CHWN on CPU and NHWC elsewhere (:func:`default_layout`), and the
  chapter-7 networks channels last (NHWC) on CPU, NCHW elsewhere
  (:func:`default_network_layout`).
- Programs jaxconv compiles itself (training's epoch and evaluation, ``jaxconv.jit``, the
  benchmark's jaxconv rows) take :func:`compiler_options`: on CPU, XLA's own (Eigen)
  convolutions instead of YNNPACK's, which do not use a second thread.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxconv.geometry import ConvGeometry, ConvTransposeGeometry, WindowGeometry
from jaxconv.kernels.batch_last import chwn_uses_patches, conv_chwn
from jaxconv.kernels.depthwise import conv_depthwise, is_depthwise
from jaxconv.kernels.nhwc import conv_nhwc, from_nhwc, to_nhwc
from jaxconv.kernels.patches import conv_patches
from jaxconv.kernels.phases import conv_transpose_phases
from jaxconv.kernels.plane_patches import beats_planes, conv_plane_patches
from jaxconv.kernels.plane_winograd import plane_winograd_wins
from jaxconv.kernels.planes import conv_planes, planes_apply
from jaxconv.kernels.strided import conv_phases, phases_apply
from jaxconv.kernels.tap_outputs import conv_tap_outputs, tap_outputs_wins
from jaxconv.kernels.transpose_planes import PLANE_LAYOUTS, conv_transpose_planes
from jaxconv.kernels.winograd import conv_winograd, winograd_wins
from jaxconv.kernels.xla import conv_lax, conv_transpose_lax

Array = jax.Array

#: Backends where the custom-derivative conv rules are the default.
VJP_BACKENDS = ("cpu", "gpu", "cuda", "rocm")


def current_backend(backend: str | None = None) -> str:
    """``backend``, or JAX's default backend (at trace time) when None."""
    return jax.default_backend() if backend is None else backend


def vjp_applies(geom: ConvGeometry) -> bool:
    """Whether ``impl="vjp"`` has its own rule for this geometry: 2-D, stride 1, dilation 1
    and groups 1 (any padding); for other geometries it computes through lax."""
    return geom.stride == (1, 1) and geom.dilation == (1, 1) and geom.groups == 1


def conv_vjp(x: Array, w: Array, geom: ConvGeometry, precision: Any) -> Array:
    """Batched conv through the NHWC rule or, for CHWN with few channels, the batch-last
    rule; lax for geometries they do not cover."""
    if not vjp_applies(geom):
        return conv_lax(x, w, geom, precision)
    if geom.layout == "CHWN" and chwn_uses_patches(x, geom):
        return conv_chwn(x, w, geom.padding, precision)
    x, w = to_nhwc(x, w, geom.layout)
    return from_nhwc(conv_nhwc(x, w, geom.padding, precision), geom.layout)


def select_impl(geom: ConvGeometry, dtype: Any, backend: str | None = None) -> str:
    """The implementation ``impl="auto"`` runs for this geometry, dtype and backend (see the
    module docstring for why)."""
    full = jnp.dtype(dtype) in (jnp.float32, jnp.float64)
    f32 = jnp.dtype(dtype) == jnp.float32
    cpu = current_backend(backend) == "cpu"
    if cpu and geom.groups > 1 and is_depthwise(geom):
        return "depthwise"
    if cpu and full and planes_apply(geom) and geom.groups == 1 and max(geom.kernel) > 1:
        patches = beats_planes(geom) or plane_winograd_wins(geom)
        return "plane_patches" if f32 and patches else "planes"
    if cpu and f32 and tap_outputs_wins(geom):
        return "tap_outputs"
    if cpu and f32 and winograd_wins(geom):
        return "winograd"
    if cpu and full and phases_apply(geom):
        return "phases"
    if current_backend(backend) not in VJP_BACKENDS or not vjp_applies(geom):
        return "lax"
    if not full:
        return "lax"
    (top, bottom), (left, right) = geom.padding
    if max(top, bottom) >= geom.kernel[0] or max(left, right) >= geom.kernel[1]:
        return "lax"
    return "vjp"


def conv_auto(x: Array, w: Array, geom: ConvGeometry, precision: Any) -> Array:
    """The path :func:`select_impl` picks for the default backend (at trace time)."""
    return IMPLEMENTATIONS[select_impl(geom, x.dtype)](x, w, geom, precision)


ConvImpl = Callable[[Array, Array, ConvGeometry, Any], Array]

#: ``convNd`` implementations by name. Each takes a *batched* input in ``geom.layout``, the
#: kernel (OIHW or HWIO), the validated :class:`~jaxconv.geometry.ConvGeometry` and a
#: precision, and returns the batched output without bias. Add an entry here to make a new
#: path selectable by ``impl``.
IMPLEMENTATIONS: dict[str, ConvImpl] = {
    "lax": conv_lax,
    "patches": conv_patches,
    "vjp": conv_vjp,
    "depthwise": conv_depthwise,
    "planes": functools.partial(conv_planes, conv2d=conv_auto),
    "tap_outputs": conv_tap_outputs,
    "winograd": conv_winograd,
    "phases": functools.partial(conv_phases, conv2d=conv_auto),
    "auto": conv_auto,
}
IMPLEMENTATIONS["plane_patches"] = functools.partial(
    conv_plane_patches, tangent_conv=IMPLEMENTATIONS["planes"]
)


def select_transpose_impl(geom: ConvTransposeGeometry, backend: str | None = None) -> str:
    """The transposed-conv implementation ``impl="auto"`` runs (see the module docstring)."""
    if current_backend(backend) != "cpu":
        return "lax"
    return "planes" if geom.layout in PLANE_LAYOUTS else "phases"


def conv_transpose_auto(x: Array, w: Array, geom: ConvTransposeGeometry, precision: Any) -> Array:
    """The path :func:`select_transpose_impl` picks for the default backend."""
    return TRANSPOSE_IMPLEMENTATIONS[select_transpose_impl(geom)](x, w, geom, precision)


ConvTransposeImpl = Callable[[Array, Array, ConvTransposeGeometry, Any], Array]

#: ``conv_transpose1d/2d/3d`` implementations by name, called like :data:`IMPLEMENTATIONS`
#: (batched input in ``geom.layout``, the forward conv's kernel in its layout, no bias).
TRANSPOSE_IMPLEMENTATIONS: dict[str, ConvTransposeImpl] = {
    "lax": conv_transpose_lax,
    "phases": conv_transpose_phases,
    "planes": conv_transpose_planes,
    "auto": conv_transpose_auto,
}


def tiles(geom: WindowGeometry) -> bool:
    """Windows that tile the padded input: every element is in at most one window."""
    return geom.stride == geom.kernel and geom.dilation == (1,) * len(geom.kernel)


def use_tiled_max_pool(geom: WindowGeometry) -> bool:
    """Whether max pooling's derivative takes the tiled rule: tiling 2-D windows on XLA:CPU,
    where it stays fast inside a training loop (the rule is written for two spatial axes)."""
    return len(geom.kernel) == 2 and tiles(geom) and current_backend() == "cpu"


def stores_max_pool_selection() -> bool:
    """Whether max pooling's general derivative stores the tap each window selects
    (:func:`~jaxconv.kernels.stored.stored`) rather than leave XLA to recompute it in the
    gradient loop: on XLA:CPU, where that loop otherwise repeats the selection per tap.
    Adaptive max pooling stores its indices there too (``jaxconv.adaptive``)."""
    return current_backend() == "cpu"


def stores_max_pool_values(geom: WindowGeometry) -> bool:
    """Whether that derivative also stores the pooled values: 2-D and 3-D windows on XLA:CPU.

    Why: XLA:CPU fuses the running ``where`` that computes them into elementwise consumers
    (e.g. a loss's gradient ``y - target``) and so into the gradient loop, once per tap: a
    3x3 stride-2 pool's forward+backward under such a loss took 3.6x (2-D) to 4.3x (3-D) as
    long (docs/BENCHMARKS.md). 1-D windows (3 taps) recompute cheaply: storing them took 1.4x
    as long on a 32x64x8192 input (0.9x on 8x32x1024).
    """
    return len(geom.kernel) >= 2 and stores_max_pool_selection()


def max_pool_values_by_taps(geom: WindowGeometry) -> bool:
    """Whether max pooling's values (where no derivative is taken) are the maximum of the
    window's taps, each sliced from the unpadded input
    (:func:`~jaxconv.kernels.windows.strided_taps` with ``pad_input=False``), rather than
    ``reduce_window``: 1-D windows on XLA:CPU.

    Why: XLA:CPU's ``reduce_window`` over a 1-D axis, with the NaN check before it, took
    1.6-5.3x the taps' time on the measured inputs (k3 s2 p1 from 8x32x1024 to 32x64x8192,
    channels first and last; k2 s2, k5 s1, a dilated ceil-mode window; one core); with it
    the op was up to 2.5x slower than PyTorch's, with the taps 0.23-0.92x. 2-D and 3-D
    windows keep ``reduce_window``: there it is several times faster than PyTorch's.
    """
    return len(geom.kernel) == 1 and current_backend() == "cpu"


#: The most kernel taps for which average pooling's tangent sums its taps (each one slice of
#: the tangent in the program); larger windows keep JAX's rule.
AVG_POOL_MAX_TAPS = 64


def avg_pool_tangent_by_taps(geom: WindowGeometry) -> bool:
    """Whether average pooling's derivative sums the tangent's taps (see ``jaxconv.pool``'s
    ``_avg_pool_jvp``) instead of JAX's rule for ``reduce_window``: on XLA:CPU, for windows
    that do not tile the input (LeNet's 2x2 pools keep the rule its epoch was measured with)
    and have at most :data:`AVG_POOL_MAX_TAPS` taps."""
    return (
        current_backend() == "cpu"
        and not tiles(geom)
        and math.prod(geom.kernel) <= AVG_POOL_MAX_TAPS
    )


#: Adaptive average bins (that do not tile their axis) at most this wide are summed from
#: static slices with JAX's derivative; wider ones by gathers with the elements-to-bins one.
ADAPTIVE_AVG_MAX_SLICES = 8

#: Wider than this, the gathers read all bins' elements at once instead of tap by tap.
ADAPTIVE_AVG_MAX_TAP_GATHERS = 32


def adaptive_avg_path(widest: int) -> str:
    """How adaptive average pooling sums the bins of an axis that they do not tile, the
    widest ``widest`` elements (see ``jaxconv.adaptive``), on every backend (GPU and TPU not
    measured): ``"slices"`` up to :data:`ADAPTIVE_AVG_MAX_SLICES`, ``"tap_gathers"`` up to
    :data:`ADAPTIVE_AVG_MAX_TAP_GATHERS`, else ``"window_gather"``."""
    if widest <= ADAPTIVE_AVG_MAX_SLICES:
        return "slices"
    return "tap_gathers" if widest <= ADAPTIVE_AVG_MAX_TAP_GATHERS else "window_gather"


def max_pool_tangent_by_phases(geom: WindowGeometry, ndim: int) -> bool:
    """Whether that derivative takes the tangent's taps from the input's stride phases
    (:func:`~jaxconv.kernels.windows.phase_taps`) rather than strided slices: strided 2-D and
    3-D windows on XLA:CPU in a channels-first layout (the last axis pooled).

    Why: the transpose of a strided slice is a pad with interior padding, which XLA:CPU
    evaluates with bounds and parity tests at every input element; along the contiguous last
    axis that cost the backward 1.4-1.7x (2-D) to 3.2x (3-D) the phases' plain pads and one
    concatenate. With the channels last, whole channel vectors move and the phases were
    slower (1.04-1.23x, NHWC and CHWN); 1-D: no gain.
    """
    return (
        stores_max_pool_selection()
        and len(geom.axes) >= 2
        and geom.axes[-1] == ndim - 1
        and any(s > 1 for s in geom.stride)
    )


def default_layout(backend: str | None = None) -> str:
    """The activation layout training runs LeNet in: "CHWN" on CPU, "NHWC" elsewhere.

    Why: on XLA:CPU, with the batch last, the patch matrices and their transposes move whole
    rows of N floats and every conv is a long matrix product, which made the CPU training
    epoch fastest (docs/BENCHMARKS.md). On GPU NHWC is the measured layout; TPU: not measured.
    CHWN's fast conv path is reverse-mode only (see :func:`jaxconv.conv2d`), which is all
    training needs; the model's own default stays NHWC, where jax.jvp works too.
    """
    return "CHWN" if current_backend(backend) == "cpu" else "NHWC"


def default_network_layout(backend: str | None = None) -> str:
    """The layout training runs a chapter-7 network in: "NHWC" on CPU, "NCHW" elsewhere.

    Why: XLA:CPU convolves channels last; an NCHW network runs every conv between NCHW <->
    NHWC transposes, and its OIHW weight gradients reach the optimizer through HWIO -> OIHW
    transposes. Channels last (conv weights stored HWIO) has neither, and the book's ResNet-18
    step measured faster in it (docs/BENCHMARKS.md). Other backends: not measured, so torch's
    layout. Both layouts compute the same function from the same torch weights.
    """
    return "NHWC" if current_backend(backend) == "cpu" else "NCHW"


#: XLA:CPU's library fusions that jaxconv's programs keep: its default set (dots and
#: reductions through YNNPACK) without YNNPACK's 2-D convolutions. YNNPACK ran the 64 -> 64
#: 3x3 layer as fast on 2 threads as on one; XLA's own convolution uses both (forward 14.7 ->
#: 8.2 ms) and the book's ResNet-18 training step took 0.78x the time on 2 threads, 0.96x on
#: one core (docs/BENCHMARKS.md). Only the convolution kernel changes, not what is computed.
CPU_COMPILER_OPTIONS: dict[str, Any] = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
    ),
}


@functools.cache
def _accepted(backend: str, options: tuple[tuple[str, Any], ...]) -> bool:
    """Whether this jaxlib compiles with ``options`` on ``backend`` (an option XLA does not
    know, e.g. after an upgrade renamed it, is an error at compile time)."""
    x = jax.device_put(0.0, jax.local_devices(backend=backend)[0])
    try:
        jax.jit(lambda x: x + 1).lower(x).compile(dict(options))
    except Exception:  # noqa: BLE001 - any refusal means: compile without them
        return False
    return True


def compiler_options(backend: str | None = None) -> dict[str, Any]:
    """The XLA compile options of the programs jaxconv compiles on ``backend`` (None: JAX's
    default backend): :data:`CPU_COMPILER_OPTIONS` on CPU where this jaxlib accepts them,
    none elsewhere (not measured)."""
    backend = current_backend(backend)
    if backend != "cpu" or not _accepted(backend, tuple(CPU_COMPILER_OPTIONS.items())):
        return {}
    return dict(CPU_COMPILER_OPTIONS)


#: XLA compile options for programs that run once (parameter initialisation): without the
#: backend's optimisations an init compiles several times faster, and most of it is unrolled
#: threefry hashing that optimisation would not speed up anyway.
RUN_ONCE = {"xla_backend_optimization_level": 0}

#: Added to :data:`RUN_ONCE` on CPU: XLA:CPU's older loop emitters compiled the networks'
#: inits (hundreds of small threefry fusions) in less time than its fusion emitters, to the
#: same bits (DenseNet 5.1-6.5 -> 3.4-3.9 s, GoogLeNet 11.3 -> 8.7 s; 2-core CPU, one
#: compile each way, the other core busy).
CPU_RUN_ONCE = {"xla_cpu_use_fusion_emitters": False}


def run_once_options(backend: str | None = None) -> dict[str, Any]:
    """The compile options of a program that runs once (an init) on ``backend`` (None: JAX's
    default): :data:`RUN_ONCE`, and on CPU :data:`CPU_RUN_ONCE` where this jaxlib accepts it."""
    backend = current_backend(backend)
    options = dict(RUN_ONCE)
    if backend == "cpu" and _accepted(backend, tuple(CPU_RUN_ONCE.items())):
        options.update(CPU_RUN_ONCE)
    return options
