"""The publish stage: ONNX export, verification in a throw-away Triton, atomic versioned publish, rollback."""
