"""The model-rewrite stage of `edgeq convert`: `--substitute`, `--clip` and, for int16
activations, the LayerNorm decomposition. Each rewrite is named in the report with the float
top-1 before and after it; the float reference the quantized model is verified against is the
rewritten model's."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeq.errors import TargetConstraintError, UsageError

CHECK_SAMPLES = 256  # calibration inputs that bound a rewrite's output change


def apply(opts: Any, target: Any, loaded: Any, calib: Any, evaluation: Any,
          float_outputs: list[np.ndarray]) -> tuple[Any, list[dict], list[np.ndarray]]:
    """(the rewritten LoadedModel, one report row per rewrite with the float top-1 before and
    after that rewrite, the new float outputs)."""
    rows: list[dict] = []
    x = calib.x[: min(CHECK_SAMPLES, calib.n)]
    outputs = float_outputs

    def done(new_loaded: Any, row: dict) -> Any:
        nonlocal outputs
        new_outputs = new_loaded.predict(evaluation.x)
        row["float_top1_before"] = _top1(outputs, evaluation)
        row["float_top1_after"] = _top1(new_outputs, evaluation)
        outputs = new_outputs
        rows.append(row)
        return new_loaded

    what = tuple(opts.substitute) or _auto_substitutions(opts, target, loaded)
    if what:
        from edgeq.transforms import substitute

        model = loaded.keras_model("--substitute")
        form = substitute.gelu_form(set(target.ops.allowed) if target.ops.allowed else None)
        r = substitute.substitute(model, x, what, form=form)
        auto = [] if opts.substitute else [
            f"auto: GELU substituted ({', '.join(r.replaced)}): '{target.name}' has no GELU "
            "kernel (the same rewrite as --substitute gelu)"]
        label = {"sigmoid": "x*sigmoid(1.702x)", "tanh": "tanh"}[form]
        loaded = done(loaded.replaced_by(r.model, [*r.notes, *auto]),
                      {"rewrite": f"substitute {','.join(what)}", "automatic": not opts.substitute,
                       "form": label, "layers": list(r.replaced), "max_abs_diff": r.max_abs_diff})
        _check_auto_budget(opts, target, rows[-1])
    if opts.clip is not None:
        from edgeq.transforms.clip import clip_activations

        c = clip_activations(loaded.keras_model("--clip"), x, opts.clip)
        loaded = done(loaded.replaced_by(c.model, [] if c.clipped else
                                         [f"--clip {opts.clip}: no activation needed clipping"]),
                      {"rewrite": f"clip {opts.clip}", "layers": [b["layer"] for b in c.clipped],
                       "clipped": list(c.clipped), "max_abs_diff": c.max_abs_diff})
    if opts.int16_activations and _has_layernorm(loaded):
        d = _decompose(loaded, x)
        loaded = done(loaded.replaced_by(d.model, [
            f"int16 activations: LayerNorm {', '.join(d.replaced)} written as MEAN/SUB/MUL/RSQRT "
            "(LiteRT's SQUARED_DIFFERENCE has no int16 kernel); float outputs changed by at "
            f"most {d.max_abs_diff:.2e}", *d.notes]),
            {"rewrite": "decompose LayerNorm (int16)", "layers": list(d.replaced),
             "max_abs_diff": d.max_abs_diff})
    return loaded, rows, outputs


def _check_auto_budget(opts: Any, target: Any, row: dict) -> None:
    """--method auto substitutes only when the rewrite alone keeps float top-1 in budget."""
    before, after = row["float_top1_before"], row["float_top1_after"]
    if not row["automatic"] or opts.max_drop is None or before is None or after is None:
        return
    if 100 * (before - after) > opts.max_drop:
        raise TargetConstraintError(
            f"target '{target.name}' cannot run op(s): GELU; the substitution {row['form']} "
            f"alone costs {100 * (before - after):.2f} pp of float top-1, past --max-drop "
            f"{opts.max_drop:g}",
            hint="raise --max-drop, retrain the model with a ReLU or sigmoid-GELU MLP, or pick "
                 "a target whose runtime has GELU")


def wanted(opts: Any) -> bool:
    """Whether the stage may rewrite anything for these options (else it is not run)."""
    return bool(opts.substitute or opts.clip is not None or opts.int16_activations
                or opts.method == "auto")


def check_options(opts: Any) -> None:
    if opts.clip is not None:
        from edgeq.transforms.clip import parse

        parse(opts.clip)
    if (opts.substitute or opts.clip is not None) and opts.method == "qat":
        raise UsageError("--substitute/--clip rewrite the model before PTQ; --method qat trains "
                         "the model as given", hint="drop --substitute/--clip, or use --method "
                         "ptq or auto")


def decomposed_for_int16(loaded: Any, x: np.ndarray) -> Any:
    """`loaded` with its LayerNorms decomposed when it has any (the 16x8 route's model)."""
    if not _has_layernorm(loaded):
        return loaded
    return loaded.replaced_by(_decompose(loaded, x).model, [])


def _decompose(loaded: Any, x: np.ndarray) -> Any:
    from edgeq.transforms.substitute import decompose_layernorms

    return decompose_layernorms(loaded.keras_model("int16 activations"), x)


def _auto_substitutions(opts: Any, target: Any, loaded: Any) -> tuple[str, ...]:
    """--method auto substitutes GELU where the target has no GELU kernel but has the ops of
    the rewrite (the budget check follows in apply)."""
    if opts.method != "auto" or loaded.format == "savedmodel" or loaded.owner is None:
        return ()
    if target.allows_op("GELU") or not target.allows_op("MUL"):
        return ()
    from edgeq.transforms.rewrite import activation_name

    has_gelu = any(activation_name(getattr(layer, "activation", None)) == "gelu"
                   for layer in loaded.owner.layers if getattr(layer, "activation", None))
    return ("gelu",) if has_gelu else ()


def _has_layernorm(loaded: Any) -> bool:
    if loaded.format == "savedmodel" or loaded.owner is None:
        return False  # no Keras layers to rewrite; the runtime check names the op instead
    import keras

    return any(isinstance(layer, keras.layers.LayerNormalization)
               for layer in getattr(loaded.owner, "layers", []))


def _top1(outputs: list[np.ndarray], evaluation: Any) -> float | None:
    if evaluation.y is None:
        return None
    return float(np.mean(np.argmax(outputs[0].reshape(len(outputs[0]), -1), axis=1)
                         == evaluation.y))
