"""covseg.engine: reading, geometry, preprocessing, sliding window, runtimes, postprocessing,
quantification, writers, model registry and batch. Imports nothing from training or export,
and never torch."""
