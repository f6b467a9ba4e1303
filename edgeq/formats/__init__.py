"""Model files as plain values: the .tflite reader, its structural checks, and the scales the
runtimes' kernels abort on. No TensorFlow here."""
