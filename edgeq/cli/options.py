"""Option groups that several commands share, written once so their names and help agree."""

from __future__ import annotations

from typing import Callable

import click

_PREPROCESS = (
    click.option("--input-scale",
                 help="Multiply raw inputs by this (e.g. 1/255) before --mean/--std."),
    click.option("--mean", help="Subtract per-channel mean(s), e.g. 127.5 or 0.485,0.456,0.406."),
    click.option("--std", help="Divide by per-channel std(s), e.g. 127.5."),
)


def preprocess_options(fn: Callable) -> Callable:
    """--input-scale, --mean, --std: how raw data becomes the model's input (edgeq.data)."""
    for option in reversed(_PREPROCESS):
        fn = option(fn)
    return fn


def tflm_tree_option(fn: Callable) -> Callable:
    """--tflm-tree: the TFLite Micro tree the emulator builds firmware from."""
    return click.option("--tflm-tree", type=click.Path(),
                        help="TFLite Micro tree with CMSIS-NN (a directory or .tar.gz) for the "
                             "emulator [$EDGEQ_TFLM_TREE].")(fn)


def data_check_options(fn: Callable) -> Callable:
    """--input-range and --strict-data: what the data is checked against, and how strictly."""
    fn = click.option("--strict-data", is_flag=True,
                      help="Stop (exit 2) on data warnings: data sets that disagree with each "
                           "other or with what the model expects (raw 0..255 pixels for a 0..1 "
                           "model, a stated --input-range), constant or repeated samples.")(fn)
    return click.option("--input-range", metavar="LO,HI",
                        help="The model's input range in training, e.g. 0,1: data (after "
                             "--input-scale/--mean/--std) outside it is a data warning.")(fn)
