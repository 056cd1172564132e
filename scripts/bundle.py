"""Export a model trained by one of the scripts here as a bundled vpcli checkpoint: fp16
safetensors (name, arch and config in its metadata), ``<stem>.config.json`` beside it, and the
manifest entry to paste into weights_manifest.yaml at the repository root (returned)."""
from __future__ import annotations

import json
from pathlib import Path


def export_bundled(model, path: Path, *, name: str, task: str, arch: str, config: dict, trained_on: str,
                   metrics: dict, description: str) -> dict:
    from safetensors.torch import save_file

    from vpcli.io.atomic import atomic_path
    from vpcli.weights.hashing import hash_file

    tensors = {k: (v.detach().half() if v.is_floating_point() else v).contiguous()
               for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"vpcli_name": name, "vpcli_arch": arch,
                                               "vpcli_config": json.dumps(config)})
    (path.parent / f"{path.stem}.config.json").write_text(json.dumps({"arch": arch, **config}, indent=2) + "\n")
    return {"name": name, "task": task, "arch": arch, "config": config,
            "source": {"bundled": f"assets/weights/{path.name}"}, "sha256": hash_file(path), "license": "MIT",
            "trained_on": trained_on, "metrics": metrics, "description": description}
