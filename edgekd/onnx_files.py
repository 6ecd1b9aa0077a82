"""The one reader of user-supplied ONNX files: ``onnx.load`` with errors that say what a bad file really is.

Used by inspect, lint, profile and the HLS front end, so a folder, an empty file, a Git LFS pointer, an
OpenVINO IR, a TensorRT engine, a text file or a model with missing external data gets the same clear
error (what, where, what to do) everywhere. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError

_OTHER_FORMATS = {
    ".xml": ("an OpenVINO IR (.xml + .bin), not an ONNX file",
             "pass the ONNX file it was converted from; `edgekd profile MODEL.xml --target openvino-cpu` runs an IR"),
    ".bin": ("OpenVINO IR weights (.bin), not an ONNX file",
             "pass the ONNX file the IR was converted from; `edgekd profile MODEL.xml --target openvino-cpu` runs an IR"),
    ".engine": ("a TensorRT engine, not an ONNX file", "pass the ONNX file the engine was built from"),
    ".plan": ("a TensorRT engine, not an ONNX file", "pass the ONNX file the engine was built from"),
    ".pt": ("a PyTorch checkpoint, not an ONNX file", "export it first: `edgekd compress --model X.pt --recipe fp32 ...`"),
    ".pt2": ("a torch.export program, not an ONNX file", "export it first: `edgekd compress --model X.pt2 --recipe fp32 ...`"),
}


def read_onnx(path: str | Path, *, error: type[EdgekdError] = EdgekdError, what: str = "an ONNX file") -> Any:
    """``onnx.load`` with errors that say what the file really is (a folder, empty, text, a Git LFS pointer,
    an OpenVINO IR, truncated, external data missing) and what to do. ``error`` is the class raised."""
    import onnx

    p = Path(path)
    where = str(p)
    if p.is_dir():
        from edgekd.bundle import MODEL, is_bundle

        hint = f"a bundle folder: pass {p / MODEL}" if is_bundle(p) else f"pass the path of {what} inside it"
        raise error("is a folder, not an ONNX file", where=where, hint=hint)
    if not p.is_file():
        raise error("ONNX file not found", where=where, hint="pass the path of a .onnx file")
    other = _OTHER_FORMATS.get(p.suffix.lower())
    if other is not None:
        raise error(f"this is {other[0]}", where=where, hint=other[1])
    size = p.stat().st_size
    if size == 0:
        raise error("the file is empty (0 bytes)", where=where,
                    hint="the export or copy that wrote it failed: export or download the model again")
    with p.open("rb") as fh:
        head = fh.read(512)
    if head.startswith(b"version https://git-lfs"):
        raise error("this is a Git LFS pointer, not the model itself", where=where,
                    hint="fetch the real file: `git lfs pull` in its repository")
    try:
        model = onnx.load(where)
    except Exception as exc:
        text = _looks_like_text(head)
        if text is not None:
            raise error(f"this is a text file, not an ONNX protobuf (it starts with {text!r})", where=where,
                        hint=f"pass {what}") from None
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if _uses_external_data(where):
            raise error(f"cannot read its external data: {detail}", where=where,
                        hint="keep the .data file(s) saved with save_as_external_data next to the .onnx, "
                             "under the names the model records") from None
        raise error(f"cannot read as ONNX ({size} bytes; the file is corrupt or truncated): {detail}", where=where,
                    hint="export or download the model again") from None
    if not model.ir_version or (not model.graph.node and not model.graph.output):
        raise error(f"holds no ONNX model (ir_version {model.ir_version}, {len(model.graph.node)} nodes)", where=where,
                    hint="the file is not an ONNX model or was written incompletely: export it again")
    return model


def _uses_external_data(path: str) -> bool:
    """The graph itself parses and some initializer lives in an external file."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:
        return False
    return any(uses_external_data(t) for t in model.graph.initializer)


def _looks_like_text(head: bytes) -> str | None:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or any(ord(c) < 32 and c not in "\t\r\n" for c in text):
        return None
    return text.strip().splitlines()[0][:60] if text.strip() else None
