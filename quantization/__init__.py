"""Quantization recipes as data, calibration sets and backends for TFLite and ONNX."""
