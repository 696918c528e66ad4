"""covseg.export: ONNX model packages from training checkpoints, parity checks, truncation, model cards."""
