"""Image folders: flat (no labels) or one sub-folder per class, decoded to the model's input.

Bounded before decoding: each image's dimensions are read from its header (Pillow reads no
pixels until asked) and an image over MAX_IMAGE_PIXELS is refused, as is a folder whose images
hold more than MAX_TOTAL_PIXELS together (decoding time grows with the source pixels: a 0.65 MB
PNG of 13,000 x 13,000 took 60 s and 1.4 GB). What the decoded samples take in memory is
checked against the bytes the folder really holds on disk, each file counted once however many
hard or symbolic links name it: past IMAGE_RATIO_FLOOR the samples may take at most IMAGE_RATIO
times those bytes, so 2,000 links to one 69-byte PNG (1.2 GB of float32 224x224x3 samples) are
refused before a pixel is decoded. A file with an image suffix that is a FIFO, a device or a
socket is refused, not opened (edgeq.formats.input_files).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgeq.data.context import LoadContext

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# 8K UHD (7680 x 4320) fits; a calibration image is resized to the model's input, a few hundred
# pixels across, so larger sources only cost memory (3 bytes a pixel, twice while converting).
MAX_IMAGE_PIXELS = 2**25
MAX_TOTAL_PIXELS = 2**33  # ~40,000 twelve-megapixel photos: minutes of decoding, not hours
# float32 samples against their files' bytes: a 28x28 PNG resized to 224x224x3 is ~2000:1, so
# the ratio only applies past a floor that such data sets stay under at a few hundred images.
IMAGE_RATIO = 1000
IMAGE_RATIO_FLOOR = 256 * 1024**2



def load_image_dir(
    root: Path, ctx: LoadContext
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None, list[str]]:
    mode, size = _image_layout(ctx)
    try:
        files, labels, classes, notes = _list_images(root, ctx)
    except PermissionError as err:
        raise ctx.error(f"cannot be read ({err})") from err
    ctx.check_labels(labels is not None, "put the images in one sub-folder per class")
    if labels is not None and classes is not None:
        _check_class_folders(classes, labels, ctx)
    k = ctx.rows(len(files))
    need = 4 * k * math.prod(ctx.spec.shape)
    ctx.check_size(need, f"{k} images of {ctx.spec.shape}")
    notes += _check_budget(files[:k], need, root, ctx)
    x = np.empty((k, *ctx.spec.shape), dtype=np.float32)
    for i, file in enumerate(files[:k]):
        x[i] = _decode_image(file, mode, size, root, ctx).reshape(ctx.spec.shape)
    notes.append(f"images decoded as {mode} and resized to {size[1]}x{size[0]} (bilinear)")
    if k < len(files):
        notes.append(f"kept the first {k} of {len(files)} images")
    y = None if labels is None else np.asarray(labels[:k], dtype=np.int64)
    return x, y, classes, notes



def _check_class_folders(names: tuple[str, ...], labels: list[int], ctx: LoadContext) -> None:
    """More class folders than the model has classes: the images in the folders past the
    model's last class carry labels it can never predict (see `to_labels`)."""
    if ctx.classes is None or len(names) <= ctx.classes:
        return
    extra = names[ctx.classes:]
    held = sum(1 for label in labels if label >= ctx.classes)
    if not held:
        return  # the extra folders are empty: no label is out of range
    listed = ", ".join(f"'{n}'" for n in extra[:5]) + (", ..." if len(extra) > 5 else "")
    raise ctx.error(
        f"holds {len(names)} class folders but the model's first output has {ctx.classes} "
        f"classes: folder(s) {listed} (labels {ctx.classes}..{len(names) - 1}) hold {held} of "
        f"{len(labels)} images",
        hint="keep one sub-folder per model class, named so that their sorted order is the "
             "model's output order")



def _image_layout(ctx: LoadContext) -> tuple[str, tuple[int, int]]:
    """PIL mode and (width, height) for the model input, which must be channels-last."""
    shape = ctx.spec.shape
    if len(shape) == 3 and shape[-1] in (1, 3):
        return ("RGB" if shape[-1] == 3 else "L"), (shape[1], shape[0])
    if len(shape) == 2:
        return "L", (shape[1], shape[0])
    raise ctx.error(
        f"the model input '{ctx.spec.name}' expects {shape}, which is not an image of "
        "(height, width, 1 or 3 channels)",
        hint="prepare the images yourself and save them as .npz with x in the model's layout",
    )



def _is_image(p: Path) -> bool:
    # Hidden files include macOS '._name.jpg' resource forks, which are not images. A FIFO or a
    # device named like an image counts as one here, to be refused by _check_budget.
    return (p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            and p.exists() and not p.is_dir())



def _check_budget(files: list[Path], need: int, root: Path, ctx: LoadContext) -> list[str]:
    """Refuse what would take too long or too much memory to decode, before decoding: special
    files, an image over MAX_IMAGE_PIXELS, more than MAX_TOTAL_PIXELS in all, or samples past
    IMAGE_RATIO times the distinct bytes on disk (see the module's docstring)."""
    from PIL import Image

    distinct: dict[tuple[int, int], int] = {}
    total = 0
    for file in files:
        st = ctx.check_path(file, directory_ok=False)
        distinct[(st.st_dev, st.st_ino)] = st.st_size
        try:
            with Image.open(file) as image:  # the header only
                width, height = _checked_size(image, file, root, ctx)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise _undecodable(file, root, err, ctx) from err
        total += width * height
        if total > MAX_TOTAL_PIXELS:
            raise ctx.error(
                f"the first {len(distinct)} images hold over {MAX_TOTAL_PIXELS:,} pixels "
                "together, more than edgeq decodes for one data set",
                hint="resize the images towards the model's input size, or pass fewer")
    on_disk = sum(distinct.values())
    if need > IMAGE_RATIO_FLOOR and need > IMAGE_RATIO * on_disk:
        raise ctx.error(
            f"{len(files)} images decode to {need / 1024**2:.0f} MiB of samples from "
            f"{on_disk:,} bytes in {len(distinct)} distinct file(s) on disk (over "
            f"{IMAGE_RATIO}:1; hard and symbolic links to one file count once)",
            hint="give distinct images, fewer of them (--calibration-samples, --eval-samples), "
                 "or the samples as .npz")
    links = len(files) - len(distinct)
    return [f"{links} of the images are further links to files already read"] if links else []



def _visible(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)



def _list_images(
    root: Path, ctx: LoadContext
) -> tuple[list[Path], list[int] | None, tuple[str, ...] | None, list[str]]:
    entries = _visible(root)
    top = [p for p in entries if _is_image(p)]
    folders = {d.name: _visible(d) for d in entries if d.is_dir()}
    per_class = {name: [p for p in files if _is_image(p)] for name, files in folders.items()}
    if top and any(per_class.values()):
        raise ctx.error(
            "holds images both directly and in sub-folders",
            hint="use either a flat folder of images (no labels) or only one sub-folder per class",
        )
    if not top and not any(per_class.values()):
        raise ctx.error(
            f"holds no images ({' '.join(IMAGE_SUFFIXES)}), directly or in class sub-folders",
            hint=f"check the folder given to {ctx.option}",
        )
    others = sum(1 for p in entries if not p.is_dir() and not _is_image(p))
    others += sum(1 for fs in folders.values() for p in fs if not p.is_dir() and not _is_image(p))
    notes = [f"ignored {others} file(s) that are not images"] if others else []
    if top:
        return top, None, None, [f"{len(top)} images, no class sub-folders (no labels)", *notes]
    classes = tuple(per_class)
    _check_class_names(classes, ctx)
    # Round-robin over the classes, so any prefix (max_samples, take) stays class-balanced.
    order = [
        (files[i], label)
        for i in range(max(len(files) for files in per_class.values()))
        for label, files in enumerate(per_class.values())
        if i < len(files)
    ]
    notes.append(
        f"{len(order)} images in {len(classes)} class folders (label = sorted folder index), "
        "ordered round-robin over the classes"
    )
    empty = [name for name, files in per_class.items() if not files]
    if empty:
        notes.append(f"class folder(s) with no images: {', '.join(empty)}")
    return [f for f, _ in order], [label for _, label in order], classes, notes



def _check_class_names(names: tuple[str, ...], ctx: LoadContext) -> None:
    """Class folder names become class names, one per line (Android's labels.txt): a name
    with a line break (or any control character) would shift every later label by a line."""
    from edgeq.outputs.text import check_one_line, terminal

    for name in names:
        why = check_one_line(name)
        if why is not None:
            raise ctx.error(f"class folder '{terminal(name)}' {why}; class names are written "
                            "one per line", hint="rename the folder without control characters")



def _decode_image(
    file: Path, mode: str, size: tuple[int, int], root: Path, ctx: LoadContext
) -> np.ndarray:
    from PIL import Image  # imported here: only image folders need Pillow

    try:
        with Image.open(file) as image:
            _checked_size(image, file, root, ctx)  # again: the file may have been replaced
            converted = image.convert(mode)  # first frame of a GIF; drops alpha
        if converted.size != size:
            converted = converted.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(converted, dtype=np.float32)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise _undecodable(file, root, err, ctx) from err



def _checked_size(image, file: Path, root: Path, ctx: LoadContext) -> tuple[int, int]:
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ctx.error(
            f"image '{file.relative_to(root)}' is {width} x {height} pixels, over the "
            f"{MAX_IMAGE_PIXELS:,} pixels edgeq decodes per image",
            hint="resize the images towards the model's input size first")
    return width, height



def _undecodable(file: Path, root: Path, err: Exception, ctx: LoadContext) -> Exception:
    return ctx.error(f"image '{file.relative_to(root)}' could not be decoded ({err})",
                     hint="remove or replace that file")
