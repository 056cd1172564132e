"""`vpcli weights ...`: list, download, verify and inspect the named weights in the manifests; export
a run's weights and convert other projects' checkpoints (each with a one-entry manifest).

Thin: parse -> `vpcli.weights` -> render. Tables and per-entry results go to stdout, progress and
messages to stderr; `--json` prints one record per entry on stdout. Errors are VpcliError
subclasses that `vpcli.cli.app.main` prints as one line.
"""
from __future__ import annotations

import sys
from json import dumps as json_text
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from vpcli.api import WEIGHTS_FORMATS
from vpcli.cli.common import emit_json, run_per_input
from vpcli.errors import UsageError

app = typer.Typer(
    help="List, download, verify and inspect named weights (see the manifest schema in "
         "weights_manifest.yaml); export a training run's weights or convert other projects' "
         "checkpoints.\n\nExample: vpcli weights download pwcnet-sniklaus, then vpcli weights verify pwcnet-sniklaus",
    no_args_is_help=True)

Manifests = Annotated[Optional[list[Path]], typer.Option(
    "--manifest", "-m", metavar="PATH", dir_okay=False,
    help="Extra manifest YAML, read after the bundled one and $VPCLI_MANIFEST (repeatable).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON record per entry on stdout.")]


def _registry(manifest: list[Path] | None):
    from vpcli.weights import load_manifests
    return load_manifests(manifest or ())


def _entry_record(entry, loc) -> dict[str, Any]:
    return {**entry.to_record(), "status": loc.status, "path": str(loc.path) if loc.path else None}


@app.command("list")
def list_(manifest: Manifests = None, json: JsonOut = False) -> None:
    """Every named set of weights: task, architecture, source, whether it is on disk, and how vpcli
    checks it (bundled, published sha256, git blob SHA-1, sha256 prefix, pinned on first use).

    Example: vpcli weights list --json
    """
    from vpcli.weights import locate

    registry = _registry(manifest)
    rows = [(entry, locate(entry)) for entry in registry]
    if json:
        for entry, loc in rows:
            emit_json(_entry_record(entry, loc))
        return
    if not rows:
        sys.stderr.write("no weights defined in: " + ", ".join(str(p) for p in registry.manifests)
                         + "\n(add entries with --manifest PATH or $VPCLI_MANIFEST)\n")
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, header_style="bold")  # no column rules: rows stay greppable
    for column in ("name", "task", "arch", "works on", "source", "where", "verified by"):
        table.add_column(column, no_wrap=True)
    for entry, loc in rows:
        table.add_row(entry.name, entry.task, entry.arch, ", ".join(entry.works_on) or "-", entry.source.kind,
                      loc.status, entry.verification)
    # A wide console when piped: rows must not be cut with an ellipsis (scripts grep them).
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    console.print(table)


@app.command()
def download(
    names: Annotated[Optional[list[str]], typer.Argument(help="Weights names (see `vpcli weights list`).",
                                                          show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Download every entry that is not on disk yet (except "
                                       "entries without a published sha256: name those).")] = False,
    metrics: Annotated[bool, typer.Option("--metrics", help="Download every network the metrics need (entries "
                                          "with task: metric, and what they require), also those "
                                          "pinned on first use.")] = False,
    manifest: Manifests = None,
    json: JsonOut = False,
) -> None:
    """Fetch weights into the local cache and check their sha256 (so they work offline later).

    An entry whose publisher gives no sha256 (`sha256: unpublished` in the manifest) is fetched
    only here: the sha256 of its first download is recorded and printed, and every later load
    and re-download must match it (trust on first use); a git blob SHA-1 or sha256 prefix the
    manifest gives is checked first. A Hub entry on a branch records the commit it got. The
    entries an entry requires (`requires:`) are downloaded with it.

    Example: vpcli weights download deeplabv3plus-mobilenet-cityscapes-vainf pwcnet-sniklaus
    """
    from vpcli.cli.progress import counting, message
    from vpcli.weights import HubSource, resolve_entry
    from vpcli.weights.resolve import needs_trust

    if sum((bool(names), all_, metrics)) != 1:
        raise UsageError("give weights names, --all or --metrics (one of them, not both)" if names or all_ or metrics
                         else "no weights named",
                         "e.g. `vpcli weights download NAME`, `--all` or `--metrics`; see `vpcli weights list`")
    registry = _registry(manifest)
    if metrics:
        wanted, pins = [], {}
        for e in registry:
            if e.task != "metric":
                continue
            # A mirror (the same file pinned by the same hash under another name) is one download too many.
            pin = e.sha256 or e.git_blob_sha1
            if pin is not None and pin in pins:
                sys.stderr.write(f"skipped {e.name}: the same file as {pins[pin]} (same "
                                 f"{'sha256' if e.sha256 else 'git blob SHA-1'}); run `vpcli weights download "
                                 f"{e.name}` to fetch it from {e.source.describe()} instead\n")
                continue
            pins.setdefault(pin, e.name)
            wanted.append(e.name)
        if not wanted:
            sys.stderr.write("no metric weights defined (entries with task: metric); nothing to download\n")
            return
    else:
        wanted = registry.names() if all_ else list(names or [])
    # Each entry after what it requires, each once: a failed requirement is reported on its own line.
    targets: list[str] = []
    for name in wanted:
        if name in registry:
            targets += [r.name for r in registry.requirements(registry.get(name)) if r.name not in targets]
        if name not in targets:
            targets.append(name)
    if all_:  # a first download is a decision about trust: only for entries named on the command line
        unpinned = {n for n in targets if needs_trust(registry.get(n))}
        for name in targets:
            if name in unpinned:
                sys.stderr.write(f"skipped {name}: its publisher gives no sha256; run `vpcli weights download "
                                 f"{name}` to fetch it and record the hash (trust on first use)\n")
            elif any(r.name in unpinned for r in registry.requirements(registry.get(name))):
                sys.stderr.write(f"skipped {name}: it requires weights without a published sha256; run "
                                 f"`vpcli weights download {name}` to fetch them and record their hashes\n")
                unpinned.add(name)
        targets = [n for n in targets if n not in unpinned]
    if not targets:
        sys.stderr.write("nothing to download\n" if registry.names() else "no weights defined; nothing to download\n")
        return

    def one(name: str) -> dict[str, Any]:
        entry = registry.get(name)
        with counting(name, unit="bytes", quiet=json) as progress:
            resolved = resolve_entry(entry, download=True, progress=progress, trust_first_use=not all_,
                                     registry=registry)
        if resolved.first_use and not entry.pinned_by_manifest:
            checked = {"git blob SHA-1": "", "sha256 prefix": f" (it starts with {entry.sha256_prefix}, as "
                                                               f"published)"}.get(entry.verification, "")
            message(f"warning: {name}: its publisher gives no sha256; recorded sha256 {resolved.sha256}{checked} of "
                    f"this first download from {entry.source.describe()} (trust on first use): compare it "
                    f"with a copy you trust; every later load must match it")
        elif resolved.first_use:
            what = "git blob SHA-1 " + entry.git_blob_sha1 if entry.git_blob_sha1 else "published sha256"
            message(f"{name}: matches its {what}; recorded sha256 {resolved.sha256}"
                    + (f" at commit {resolved.commit}" if resolved.commit else ""))
        if resolved.first_use and resolved.commit and isinstance(entry.source, HubSource) \
                and not entry.source.is_commit:
            message(f"{name}: revision {entry.source.revision} of {entry.source.repo_id} is commit "
                    f"{resolved.commit}; vpcli uses that commit from now on")
        message(f"{name}: ok ({resolved.path})")
        return {"name": name, "path": str(resolved.path), "sha256": resolved.sha256, "source": resolved.source,
                "first_use": resolved.first_use, "verification": entry.verification, "commit": resolved.commit,
                "requires": list(entry.requires)}

    raise typer.Exit(run_per_input(targets, one, as_json=json))


@app.command()
def verify(
    names: Annotated[Optional[list[str]], typer.Argument(help="Weights names; default: every entry on disk.",
                                                          show_default=False)] = None,
    manifest: Manifests = None,
    json: JsonOut = False,
) -> None:
    """Re-hash local weights files and compare with the manifest: ok, mismatch or missing.

    A mismatching cached download is deleted (download it again); a bundled file is only reported.
    Exits 1 if any file mismatches, or if a weights set named on the command line is missing.

    Example: vpcli weights verify
    """
    from vpcli.weights import verify_entry

    registry = _registry(manifest)
    entries = [registry.get(n) for n in names] if names else list(registry)
    if not entries:
        sys.stderr.write("no weights defined; nothing to verify\n")
        return
    counts = {"ok": 0, "mismatch": 0, "missing": 0}
    failed = False
    for entry in entries:
        result = verify_entry(entry)
        counts[result.status] += 1
        failed |= result.status == "mismatch" or (result.status == "missing" and bool(names))
        if json:
            emit_json({"name": result.name, "status": result.status, "path": str(result.path) if result.path else None,
                       "expected": result.expected, "actual": result.actual, "message": result.message})
        else:
            detail = result.message if result.status != "ok" else str(result.path)
            sys.stdout.write(f"{result.status:<9}{result.name}  {detail}\n")
    sys.stderr.write(f"verified {len(entries)}: {counts['ok']} ok, {counts['mismatch']} mismatch, "
                     f"{counts['missing']} missing\n")
    if failed:
        raise typer.Exit(1)


@app.command()
def info(
    name: Annotated[str, typer.Argument(help="Weights name (see `vpcli weights list`).", show_default=False)],
    manifest: Manifests = None,
    json: JsonOut = False,
) -> None:
    """Every field of one entry: source, sha256 and how it is verified, licence, training data,
    metrics, local status (and the record of its first download, if it keeps one).

    Example: vpcli weights info slamp-movingdigits --json
    """
    from vpcli.weights import HubSource, locate, recorded_sha256

    entry = _registry(manifest).get(name)
    record = _entry_record(entry, locate(entry))
    sha = entry.sha256
    first = None
    if entry.records_first_use:
        first = record["recorded_sha256"] = recorded_sha256(entry)
    if not entry.published:
        sha = (f"unpublished; recorded at the first download ({first.get('recorded', '?')}): {first['sha256']}"
               if first else "unpublished; recorded at the first `vpcli weights download`")
    if json:
        emit_json(record)
        return
    source = entry.source
    config = record["config"] if isinstance(entry.config, Path) else json_text(record["config"])
    lines = [
        ("name", entry.name), ("task", entry.task), ("arch", entry.arch),
        ("config", config), ("source", f"{source.kind}: {source.describe()}"),
        ("sha256", sha), ("verified", entry.verification),
        *([("git_blob_sha1", entry.git_blob_sha1)] if entry.git_blob_sha1 else []),
        *([("sha256_prefix", entry.sha256_prefix)] if entry.sha256_prefix else []),
        *([("commit", (f"{first['commit']} (revision {source.revision} at the first download, "
                       f"{first.get('recorded', '?')})") if first else
                      f"revision {source.revision} is resolved and recorded at the first download")]
          if isinstance(source, HubSource) and not source.is_commit else []),
        *([("requires", ", ".join(entry.requires))] if entry.requires else []),
        ("license", entry.license), ("trained_on", entry.trained_on),
        ("works_on", ", ".join(entry.works_on) or "(not said)"),
        ("metrics", ", ".join(f"{k}={v}" for k, v in record["metrics"].items()) or "(none)"),
        ("description", entry.description or ""), ("manifest", str(entry.manifest)),
        ("status", record["status"]), ("path", record["path"] or ""),
    ]
    width = max(len(k) for k, _ in lines)  # aligned "key  value" lines: easy to read and to grep
    for key, value in lines:
        sys.stdout.write(f"{key:<{width}}  {value}\n")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `vpcli train`.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Name of the new manifest entry.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Weights file (default RUN_DIR/export/NAME.safetensors).")] = None,
    which: Annotated[str, typer.Option(help="best (default; last when the run has no validation) or last.")] = "best",
    fp16: Annotated[bool, typer.Option(help="Store floating-point tensors as float16 (half the size).")] = False,
    license: Annotated[str, typer.Option(help="Licence recorded in the entry.")] = "MIT",
    part: Annotated[Optional[list[str]], typer.Option(
        "--part", help="Export only this part of a multi-part method (repeatable; default: every inference "
                       "part). Training-only modules (discriminators) are never exported.")] = None,
    init: Annotated[Optional[list[str]], typer.Option(
        "--init", help="PART=WEIGHTS: take this part from other weights (a run folder, file or manifest "
                       "name) instead of the run's checkpoint (repeatable): one file from two runs that "
                       "trained a method's stages side by side.")] = None,
    json: JsonOut = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing export.")] = False,
) -> None:
    """Export a run's weights as a bundle-ready safetensors file plus its manifest entry
    (sha256, config, training provenance, validation scores) in NAME.manifest.yaml beside it.

    Example: vpcli train --config convlstm-mmnist-tiny --out runs/tiny, then
    vpcli weights export runs/tiny --name my-convlstm --fp16, then
    vpcli weights list --manifest runs/tiny/export/my-convlstm.manifest.yaml
    """
    if which not in ("best", "last"):
        raise UsageError(f"--which must be best or last, got {which!r}", "pass --which best or --which last")
    from vpcli import api
    rec = api.export_weights(run_dir, name, out=out, which=which, fp16=fp16, license=license, overwrite=overwrite,
                             parts=part or None, init=init or None)
    if json:
        emit_json(rec)
    else:
        typer.echo(f"wrote {rec['weights']} ({rec['bytes']} bytes, sha256 {rec['sha256']}) and {rec['manifest']}")


def _convert_help() -> str:
    formats = "\n\n".join(f"{fmt}: {info['what']}.\n\n  {info['example']}" for fmt, info in WEIGHTS_FORMATS.items())
    return ("Convert another project's checkpoint to vpcli safetensors plus its one-entry manifest "
            "NAME.manifest.yaml beside it (sha256, config, source file and its sha256), as `vpcli weights "
            "export` writes. The file is read with torch.load(weights_only=True): nothing in it can run code.\n\n"
            f"Formats (--from):\n\n{formats}\n\n"
            "Use the result with --weights FILE (segment, flow) or by name: --manifest NAME.manifest.yaml, "
            "or add it to $VPCLI_MANIFEST (predict, eval).")


@app.command(help=_convert_help())
def convert(
    file: Annotated[Path, typer.Argument(help="The checkpoint file to convert.", show_default=False)],
    fmt: Annotated[str, typer.Option("--from", "-f", metavar="FORMAT", show_default=False,
                                     help=f"Checkpoint format: {', '.join(WEIGHTS_FORMATS)}.")],
    out: Annotated[Path, typer.Option("--out", "-o", dir_okay=False, show_default=False,
                                      help="The .safetensors file to write; NAME.manifest.yaml goes beside it.")],
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Manifest entry name (default: the stem of --out).")] = None,
    config: Annotated[Optional[str], typer.Option(
        "--config", help="slamp-official: the preset or YAML file whose model section the checkpoint was trained with.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="KEY=VALUE", help="slamp-official: override a config value, e.g. model.rnn_size=256.")] = None,
    arch: Annotated[Optional[str], typer.Option(
        help="deeplab-vainf: the backbone, mobilenet, resnet50 or resnet101 (VainF's deeplabv3plus_* names work too).")] = None,
    num_classes: Annotated[Optional[int], typer.Option(
        "--num-classes", min=1, help="deeplab-vainf: expected class count (19 Cityscapes, 21 VOC); default: read from the file.")] = None,
    output_stride: Annotated[Optional[int], typer.Option(
        "--output-stride", help="deeplab-vainf: 8 or 16 (default 16, as VainF's published checkpoints).")] = None,
    input_size: Annotated[Optional[str], typer.Option(
        "--input-size", metavar="HxW", help="deeplab-vainf: the size inference fits frames into (default 1024x2048).")] = None,
    fp16: Annotated[bool, typer.Option(help="Store floating-point tensors as float16 (half the size).")] = False,
    license: Annotated[Optional[str], typer.Option(help="Licence recorded in the entry (default: what the format's source states).")] = None,
    json: JsonOut = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output and manifest.")] = False,
) -> None:
    from vpcli import api
    rec = api.convert_weights(fmt, file, out, name=name, config=config, overrides=list(set_ or []), arch=arch,
                              num_classes=num_classes, output_stride=output_stride, input_size=input_size,
                              fp16=fp16, license=license, overwrite=overwrite)
    if json:
        emit_json(rec)
    else:
        typer.echo(f"wrote {rec['weights']} ({rec['tensors']} tensors, {rec['bytes']} bytes, sha256 {rec['sha256']}) "
                   f"and {rec['manifest']}")
