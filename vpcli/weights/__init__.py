"""Named weights: the manifest, resolution (explicit path / bundled / Hub / pinned URL), sha256.

    from vpcli.weights import resolve
    path = resolve("slamp-mmnist")            # or a path: resolve("runs/x/model.safetensors")

Nothing here imports torch or huggingface_hub at import time (the Hub client is imported only
when a Hub entry is looked up).
"""
from vpcli.weights.hashing import file_sha256, vpcli_cache_dir
from vpcli.weights.manifest import (
                                    BUNDLED_MANIFEST,
                                    ENV_VAR,
                                    TASKS,
                                    UNPUBLISHED,
                                    BundledSource,
                                    HubSource,
                                    Source,
                                    UrlSource,
                                    WeightsEntry,
                                    WeightsRegistry,
                                    load_manifest,
                                    load_manifests,
                                    manifest_paths,
)
from vpcli.weights.resolve import (
                                    Location,
                                    ResolvedWeights,
                                    VerifyResult,
                                    check_sha256,
                                    expected_sha256,
                                    first_use_dir,
                                    hf_cache_dir,
                                    how_to_get,
                                    is_offline,
                                    locate,
                                    recorded_sha256,
                                    resolve,
                                    resolve_entry,
                                    resolve_weights,
                                    url_cache_path,
                                    verify_entry,
)

__all__ = [
    "BUNDLED_MANIFEST", "ENV_VAR", "TASKS", "UNPUBLISHED", "BundledSource", "HubSource", "Source", "UrlSource",
    "WeightsEntry", "WeightsRegistry", "load_manifest", "load_manifests", "manifest_paths",
    "Location", "ResolvedWeights", "VerifyResult", "check_sha256", "expected_sha256", "file_sha256", "first_use_dir",
    "hf_cache_dir", "how_to_get", "is_offline", "locate", "recorded_sha256", "resolve", "resolve_entry",
    "resolve_weights", "url_cache_path", "verify_entry", "vpcli_cache_dir",
]
