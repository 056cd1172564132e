"""Print README's "Weights" table from the manifest: every entry, what it is, where it comes from,
its licence and how vpcli verifies it.

    python scripts/weights_table.py                     # the bundled weights_manifest.yaml
    python scripts/weights_table.py --manifest more.yaml

Only the manifests named here are read (not $VPCLI_MANIFEST), so the table is the same on every
machine. Paste the output over the table in README.md.
"""
from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit

# How each kind of verification reads in the table (`WeightsEntry.verification` names the kind).
_VERIFIED = {
    "bundled": "bundled (sha256 in the manifest)",
    "published sha256": "published sha256",
    "pinned on first use": "pinned on first use (sha256 recorded at `vpcli weights download`)",
}


def _cell(text: str) -> str:
    """One table cell: one line, no bare '|'."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _first_sentence(text: str, limit: int = 140) -> str:
    """Up to the first '.', ';' or ':' outside brackets that ends a word (so not "et al. (2018)")."""
    text = " ".join(text.split())
    depth, end = 0, len(text)
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif depth == 0 and ch in ".;" and (i + 1 == len(text) or text[i + 1] == " ") \
                and not text[:i].endswith((" al", "e.g", "i.e")):
            end = i
            break
    short = text[:end]
    return short if len(short) <= limit else short[:limit - 1].rstrip() + "…"


def what(entry) -> str:
    text = _first_sentence(entry.description) if entry.description else entry.arch
    if entry.requires:
        text += "; with " + ", ".join(f"`{r}`" for r in entry.requires)
    if getattr(entry, "convert", None):
        text += f"; converted to safetensors on download ({entry.convert})"
    return f"{entry.task}: {text}"


def source(entry) -> str:
    src = entry.source
    if src.kind == "bundled":
        return f"bundled: `{src.relpath}`"
    if src.kind == "hub":
        rev = src.revision[:12] if src.is_commit else f"{src.revision} (commit pinned on first use)"
        return f"Hugging Face `{src.repo_id}` `{src.filename}` @ {rev}"
    host = urlsplit(src.url).hostname or src.url
    return f"[{host}]({src.url})"


def verified(entry) -> str:
    kind = entry.verification
    if kind in _VERIFIED:
        return _VERIFIED[kind]
    parts = []
    if entry.git_blob_sha1:
        parts.append(f"git blob SHA-1 `{entry.git_blob_sha1[:12]}…`")
    if entry.sha256_prefix:
        parts.append(f"sha256 prefix `{entry.sha256_prefix}`")
    return " + ".join(parts) + ", then sha256 pinned"


def table(registry) -> str:
    header = ("name", "what it is", "works on", "comes from", "licence", "verified by")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for entry in registry:
        cells = (f"`{entry.name}`", what(entry), ", ".join(entry.works_on) or "-", source(entry), entry.license,
                 verified(entry))
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", "-m", action="append", default=[], metavar="PATH",
                        help="an extra manifest, read after the bundled one (repeatable)")
    parser.add_argument("--no-bundled", action="store_true", help="leave out the bundled manifest")
    args = parser.parse_args(argv)
    from vpcli.errors import VpcliError
    from vpcli.weights import load_manifests

    try:
        registry = load_manifests(args.manifest, env=False, bundled=not args.no_bundled)
    except VpcliError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    sys.stdout.write(table(registry) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
