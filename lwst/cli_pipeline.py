"""``lwst make-manifest``, and the S3 options it shares with ``lwst run`` (`flows.cli`).

Registering the command imports no engine (`lwst.s3`, `lwst.manifest` pull torch or pandas):
its handler does, so ``lwst --help`` stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any

from lwst.cli_options import check_output_location, settings_named_by_option


def add_s3_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("S3 (default: the AWS_* environment variables)")
    group.add_argument("--s3-endpoint-url", help="e.g. http://127.0.0.1:9000 for a local server")
    group.add_argument("--aws-access-key-id")
    group.add_argument("--aws-secret-access-key")
    group.add_argument("--aws-region")


def storage_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The S3 storage options of `add_s3_options`'s options over the environment's."""
    from lwst import s3

    return s3.storage_options(endpoint_url=args.s3_endpoint_url, key=args.aws_access_key_id,
                              secret=args.aws_secret_access_key, region=args.aws_region)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``make-manifest`` on the ``lwst`` command."""
    make = subparsers.add_parser(
        "make-manifest", help="build a manifest from folders of content and style images",
        description="All (content, style) pairs; with --n a seeded random sample of N distinct "
        "(content, geometry, texture) triples; with --per-content K, K distinct draws for every "
        "content. Folders may be local or s3:// prefixes; lwst output folders found inside them "
        "are left out.")
    make.add_argument("--contents", nargs="+", required=True, help="content folders/prefixes")
    make.add_argument("--styles", nargs="+", required=True, help="style folders/prefixes")
    draws = make.add_mutually_exclusive_group()
    draws.add_argument("--n", type=int, default=None,
                       help="number of random triples (a larger N keeps the first N)")
    draws.add_argument("--per-content", type=int, default=None, metavar="K",
                       help="K distinct (geometry, texture) draws for every content")
    make.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    make.add_argument("--no-geometry", action="store_true",
                      help="no geometry exemplar: texture-only augmentation (no warp)")
    make.add_argument("--out", required=True, help="manifest to write (.csv, .parquet, .jsonl)")
    add_s3_options(make)
    make.set_defaults(handler=cmd_make_manifest)


def cmd_make_manifest(args: argparse.Namespace) -> int:
    from lwst.manifest import write_manifest
    from lwst.manifest_builder import make_manifest

    opts = storage_options_from_args(args)
    check_output_location("--out", args.out)
    with settings_named_by_option():  # "--n must be within ...", not the library's "n"
        frame = make_manifest(args.contents, args.styles, n=args.n, seed=args.seed,
                              storage_options=opts, per_content=args.per_content,
                              geometry=not args.no_geometry)
    write_manifest(frame, args.out, opts)
    print(f"wrote {len(frame)} items to {args.out}")
    return 0
