"""Runners (torch reference, LiteRT, onnxruntime, engines) behind one protocol; parity; latency."""
