"""covseg.export: ONNX model packages from training checkpoints, parity checks, truncation, model cards.

- `checkpoint.export_checkpoint(folder, out, Identity(...), ExportOptions(...), truncate=K, finetune=RECIPE)`:
  what `covseg export` runs (network rebuilt with covseg.training's API; metadata from config + state);
- `exporter.export_network(network, PackageSpec, out, ExportOptions, head=...)`: any network to a package
  (+ `out`-fp16 / `out`-ort-optimized variants), all or nothing;
- `onnx_export` (torch.onnx dynamo exporter, TorchScript fallback), `parity`, `complexity` (parameters,
  MACs, latency), `variants` (fp16, ORT-optimised), `metadata` (model.json, the ONNX metadata copy),
  `model_card`, `package_writer` (staging folder, engine loader as the final check), `truncate` (seed 003).
Needs the `export` extra (torch, onnx; onnxconverter-common for --fp16).
"""
