"""torch → LiteRT and → ONNX export; packaging (.litertlm, ONNX bundle)."""
