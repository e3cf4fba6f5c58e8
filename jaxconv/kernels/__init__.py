"""The engine: the speed paths behind :mod:`jaxconv.conv` and :mod:`jaxconv.pool`.

One job per module:

- :mod:`~jaxconv.kernels.dispatch`: the registry of conv implementations, the choice between
  paths and the backend's default layout; the only module that asks for the backend.
- :mod:`~jaxconv.kernels.windows`: strided taps of a padded array (also cut from its stride
  phases), and the chapter's vmapped window maps with their reverse-mode rules.
- :mod:`~jaxconv.kernels.xla`: XLA's own convolution (``impl="lax"``).
- :mod:`~jaxconv.kernels.patches`: explicit patches and one matrix product (``impl="patches"``).
- :mod:`~jaxconv.kernels.nhwc`: the NHWC ``custom_jvp`` rule of ``impl="vjp"``.
- :mod:`~jaxconv.kernels.batch_last`: the CHWN ``custom_vjp`` rule (patch matrices, col2im,
  row blocks).
- :mod:`~jaxconv.kernels.depthwise`: depthwise convs (groups == channels, any rank) as sums
  of strided taps times per-channel weights (``impl="depthwise"``).
- :mod:`~jaxconv.kernels.planes`: a 3-D conv as ONE 2-D conv over stacked depth planes
  (``impl="planes"``).
- :mod:`~jaxconv.kernels.plane_patches`: a 3-D conv's values and weight gradient as chunked
  patch matrices, one matrix product each, with the planes' input gradient
  (``impl="plane_patches"``).
- :mod:`~jaxconv.kernels.tap_outputs`: an NCL 1-D conv's values as one product per batch item
  with the taps stacked on the output rows, with XLA's derivatives (``impl="tap_outputs"``).
- :mod:`~jaxconv.kernels.borrowed`: a conv with one formulation's values and another's
  derivatives (the ``custom_jvp`` of ``impl="tap_outputs"``).
- :mod:`~jaxconv.kernels.phases`: the transposed conv as stride-1 convs per stride phase and a
  pixel shuffle, with derivatives in XLA:CPU's fast forms (``impl="phases"``).
- :mod:`~jaxconv.kernels.transpose_planes`: a 3-D transposed conv as ONE 2-D transposed conv
  over depth planes (``conv_transpose3d(impl="planes")``).
- :mod:`~jaxconv.kernels.maxpool`: max pooling's values, derivative (N-D, and tiled 2-D) and
  indices.
- :mod:`~jaxconv.kernels.batchnorm`: batch normalisation with the batch's statistics and its
  closed-form derivative (used by :mod:`jaxconv.nn`'s ``BatchNorm1d/2d/3d``).
- :mod:`~jaxconv.kernels.stored`: a value XLA:CPU computes once and stores (max pooling's
  selection) instead of recomputing it inside every consumer.

Measurements behind the choices are in docs/BENCHMARKS.md.
"""
