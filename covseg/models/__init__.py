"""The shipped default model packages, one folder each (model.onnx, model.json, MODEL_CARD.md)."""
