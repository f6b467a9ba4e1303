"""The data a run reads, checked against the model before any work: the Dataset type and its
loader (`dataset`), .npy/.npz files (`arrays`), image folders (`images`), labels (`labels`),
preprocessing options (`preprocess`), what every loader shares (`context`), and sanity checks
across data sets (`checks`)."""

from edgeq.data.arrays import NPZ_MAX_RATIO, precheck
from edgeq.data.context import MAX_BYTES, InputSpec
from edgeq.data.dataset import Dataset, check_input_spec, load_dataset
from edgeq.data.images import IMAGE_SUFFIXES
from edgeq.data.labels import output_classes
from edgeq.data.preprocess import Preprocess

__all__ = ["IMAGE_SUFFIXES", "MAX_BYTES", "NPZ_MAX_RATIO", "Dataset", "InputSpec", "Preprocess",
           "check_input_spec", "load_dataset", "output_classes", "precheck"]
