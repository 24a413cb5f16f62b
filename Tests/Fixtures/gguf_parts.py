"""Writes a small GGUF fixture as committed text instead of a binary model file: NAME.gguf.json
holds its metadata (key, GGUF type, value) and its tensors (name, numpy-order shape, ggml type,
base64 bytes), in file order. Tests/TestSupport (`fixtureGGUF`) writes the GGUF back with lorac's
GGUFFileWriter into a temporary folder, so no .gguf is tracked by git.

    python gguf_parts.py FILE.gguf [--remove]     # writes FILE.gguf.json (and removes FILE.gguf)
"""
import base64
import json
import os
import sys

import gguf


def field_value(field):
    kind = gguf.GGUFValueType(field.types[0])
    if kind == gguf.GGUFValueType.ARRAY:
        item = gguf.GGUFValueType(field.types[1])
        values = [scalar(item, field.parts[i]) for i in field.data]
        return {"type": "array", "item": item.name.lower(), "value": values}
    return {"type": kind.name.lower(), "value": scalar(kind, field.parts[field.data[0]])}


def scalar(kind, part):
    if kind == gguf.GGUFValueType.STRING:
        return bytes(part).decode("utf-8")
    if kind == gguf.GGUFValueType.BOOL:
        return bool(part[0])
    if kind in (gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.FLOAT64):
        return float(part[0])
    return int(part[0])


def write_parts(path, remove=False):
    reader = gguf.GGUFReader(path)
    metadata = []
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue  # version and counts: the writer's own
        metadata.append(dict(key=key, **field_value(field)))
    tensors = [{"name": t.name, "shape": [int(n) for n in reversed(t.shape)],
                "type": int(t.tensor_type), "data": base64.b64encode(bytes(t.data.tobytes())).decode()}
               for t in reader.tensors]
    with open(path + ".json", "w") as f:
        json.dump({"metadata": metadata, "tensors": tensors}, f, indent=0, ensure_ascii=False)
        f.write("\n")
    if remove:
        os.remove(path)


if __name__ == "__main__":
    write_parts(sys.argv[1], remove="--remove" in sys.argv[2:])
