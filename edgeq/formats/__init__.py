"""Model files as plain values: the .tflite reader, its structural checks, and the scales the
runtimes' kernels abort on; Keras files read as untrusted data (bounded zip and HDF5 reading,
the safe-loading policy for configs and its allow-list). No TensorFlow here."""
