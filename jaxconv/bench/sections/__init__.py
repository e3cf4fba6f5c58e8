"""The benchmark's sections, one module each: ``ops`` (conv and pooling per layer, in scan,
the manual paths), ``family`` (the conv family beyond LeNet), ``epoch`` (a LeNet epoch and
the machine's floor), ``profile`` (one epoch under jax.profiler) and ``sweep`` (the epoch
under XLA_FLAGS sets, each in a fresh process). Each returns a list of report rows."""
