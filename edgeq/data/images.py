"""Image folders: flat (no labels) or one sub-folder per class, decoded to the model's input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgeq.data.context import LoadContext

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")



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
    ctx.check_size(4 * k * math.prod(ctx.spec.shape), f"{k} images of {ctx.spec.shape}")
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
    # Hidden files include macOS '._name.jpg' resource forks, which are not images.
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()



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
    others = sum(1 for p in entries if p.is_file() and not _is_image(p))
    others += sum(1 for fs in folders.values() for p in fs if p.is_file() and not _is_image(p))
    notes = [f"ignored {others} file(s) that are not images"] if others else []
    if top:
        return top, None, None, [f"{len(top)} images, no class sub-folders (no labels)", *notes]
    classes = tuple(per_class)
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



def _decode_image(
    file: Path, mode: str, size: tuple[int, int], root: Path, ctx: LoadContext
) -> np.ndarray:
    from PIL import Image  # imported here: only image folders need Pillow

    try:
        with Image.open(file) as image:
            converted = image.convert(mode)  # first frame of a GIF; drops alpha
        if converted.size != size:
            converted = converted.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(converted, dtype=np.float32)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ctx.error(
            f"image '{file.relative_to(root)}' could not be decoded ({err})",
            hint="remove or replace that file",
        ) from err
