"""Export the generator to ONNX and TensorRT, and check the results."""
