"""The ``fastssl profile --json`` document's schema (shown in docs/profile.md, tested equal) and
a validator for the subset of JSON Schema it uses."""

from __future__ import annotations

import math
from typing import Any

# -- JSON schema (draft 2020-12 subset; docs/profile.md shows the same dict) -----------------
_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_INT_OR_NULL = {"type": ["integer", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}


def _obj(props: dict[str, Any], required: list[str] | None = None, extra: bool = False) -> dict:
    return {"type": "object", "properties": props,
            "required": sorted(props) if required is None else required,
            "additionalProperties": extra}


STAT = _obj({"median": _NUM, "min": _NUM, "max": _NUM,
              "values": {"type": "array", "items": _NUM, "minItems": 1}})
STAT_OR_NULL = {**STAT, "type": ["object", "null"]}

SCHEMA: dict[str, Any] = _obj({
    "schema_version": {"type": "integer", "enum": [2]},
    "created": {"type": "string", "description": "ISO 8601 time the profile started"},
    "elapsed_s": _NUM,
    "config": {"type": "object", "description": "the resolved run config (as config.yaml)"},
    "options": _obj({
        "repeats": {"type": "integer", "minimum": 1}, "warmup": {"type": "integer", "minimum": 0},
        "steps": {"type": "integer", "minimum": 1},
        "compile": {"type": "string", "enum": ["auto", "on", "off", "both"]},
        "sweep": {"type": "string", "enum": ["", "workers", "loaders", "all"]},
        "budget_s": _NUM}),
    "host": _obj({
        "cpu_cores_available": {"type": "integer"}, "cpu_count": {"type": "integer"},
        "device": {"type": "string"}, "device_name": {"type": "string"},
        "gpu_memory_total_bytes": _INT_OR_NULL, "torch": {"type": "string"},
        "dali": _STR_OR_NULL, "fastssl": {"type": "string"}}),
    "loader": _obj({
        "name": {"type": "string", "enum": ["memory", "torch", "dali", "video"]},
        "workers": {"type": "integer", "description": "DataLoader workers / DALI threads"},
        "batch_size": {"type": "integer", "description": "per process"},
        "batches_per_epoch": {"type": "integer"},
        "shapes": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}},
                   "description": "one (B, C, H, W) per view"},
        "dtype": {"type": "string"},
        "images_per_s": STAT, "batches_per_s": STAT, "batch_s": STAT,
        "first_batch_s": {**STAT, "description": "start-up cost paid once per epoch"},
        "repeats": {"type": "integer", "minimum": 1},
        "operators": {"type": ["array", "null"], "items": _obj({
            "name": {"type": "string"}, "ms_per_sample": _NUM,
            "share": {"type": "number", "minimum": 0, "maximum": 1}}),
            "description": "per-sample cost of each loader operator, timed alone in one "
                           "thread (torchvision ops, or DALI ops on the run's device)"},
        "dali_executor_statistics": {"type": ["object", "null"],
                                     "description": "DALI executor_statistics() per operator"},
    }),
    "step": _obj({
        "variants": {"type": "array", "minItems": 1, "items": _obj({
            "compiled": {"type": "boolean"}, "images_per_s": STAT, "step_s": STAT,
            "gpu_step_s": STAT_OR_NULL,
            "first_step_s": {**_NUM_OR_NULL, "description": "includes compilation"},
            "repeats": {"type": "integer", "minimum": 1},
            "peak_memory_bytes": _INT_OR_NULL})},
        "used": {"type": "integer", "minimum": 0,
                 "description": "index of the variant used end to end and in the verdict"}}),
    "end_to_end": _obj({
        "images_per_s": STAT,
        "wait_fraction": {**STAT, "description": "time blocked in the loader's next() / wall"},
        "wait_s_per_step": STAT, "repeats": {"type": "integer", "minimum": 1},
        "cpu_cores_used": {**_NUM_OR_NULL, "description": "this process and its workers"},
        "system_cpu_cores_busy": _NUM_OR_NULL, "gpu_utilisation_percent": _NUM_OR_NULL,
        "gpu_memory_used_bytes": _INT_OR_NULL}),
    "sweep": {"type": ["array", "null"], "items": _obj({
        "workers": {"type": "integer", "minimum": 1}, "images_per_s": _NUM,
        "first_batch_s": _NUM})},
    "loaders": {"type": ["array", "null"], "description":
                "end to end with each other available loader, same views (--sweep loaders, or "
                "unasked when the loader may limit the run)", "items": _obj({
                    "name": {"type": "string", "enum": ["memory", "torch", "dali", "video"]},
                    "end_to_end_images_per_s": _NUM, "wait_fraction": _NUM})},
    "verdict": _obj({
        "bound": {"type": "string", "enum": ["input", "compute", "balanced"]},
        "text": {"type": "string"}, "loader_images_per_s": _NUM, "step_images_per_s": _NUM,
        "end_to_end_images_per_s": _NUM, "wait_fraction": _NUM,
        "potential_speedup": {"type": "number", "description":
                              "step-alone / end-to-end throughput: the gain if input were free"}}),
    "suggestions": {"type": "array", "items": {"type": "string"}},
    "trace": _STR_OR_NULL,
})

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def validate(value: Any, schema: dict = SCHEMA, path: str = "$") -> list[str]:
    """Errors of ``value`` against the subset of JSON Schema used by ``SCHEMA`` (type, enum,
    properties, required, additionalProperties, items, minItems, minimum, maximum)."""
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_is_type(value, t) for t in types):
            return [f"{path}: expected {' or '.join(types)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errors += [f"{path}: missing '{k}'" for k in schema.get("required", []) if k not in value]
        for k, v in value.items():
            if k in props:
                errors += validate(v, props[k], f"{path}.{k}")
            elif schema.get("additionalProperties", True) is False:
                errors.append(f"{path}: unexpected key '{k}'")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, v in enumerate(value):
                errors += validate(v, schema["items"], f"{path}[{i}]")
    return errors


def _is_type(value: Any, t: str) -> bool:
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    return isinstance(value, _TYPES[t])


# -- verdict and suggestions -----------------------------------------------------------------
