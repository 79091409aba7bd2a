"""`recs keygen`, `recs export-bundle`, `recs verify-bundle`: signed model bundles."""
from __future__ import annotations

from pathlib import Path

import typer

from recs.bundle import (
    BundleExportError, BundleKeyError, check_bundle, export_bundle, generate_keypair, load_public_key,
)
from recs.bundle.export import bundle_summary
from recs.cli.common import console, fail, out, print_json


def register(app: typer.Typer) -> None:
    @app.command("keygen")
    def keygen(
        out_dir: Path = typer.Option(..., "--out", help="Folder for signing_key.pem (0600) and signing_key.pub.pem."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing key pair in --out."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Write an Ed25519 signing key pair (PEM; private key mode 0600)."""
        try:
            kp = generate_keypair(out_dir, overwrite=overwrite)
        except BundleKeyError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"{out_dir}: cannot write keys ({exc.strerror or exc})")
        res = {"private_key": str(kp.private_key), "public_key": str(kp.public_key), "key_id": kp.key_id}
        if json_out:
            print_json(res)
            return
        for line in (f"key id {kp.key_id}",
                     f"private key {kp.private_key} (mode 0600: keep it secret, never ship it)",
                     f"public key  {kp.public_key} (give this to servers and verify-bundle)"):
            out.print(line, highlight=False, soft_wrap=True)

    @app.command("export-bundle")
    def export_bundle_cmd(
        model: Path = typer.Option(..., "--model", help="Trained model folder (from `recs train`)."),
        out_path: Path = typer.Option(..., "--out", help="Bundle to write: a folder, or a .tar.gz with --tar."),
        key: Path = typer.Option(..., "--key", help="Ed25519 private key (PEM) from `recs keygen`."),
        tar: bool = typer.Option(False, "--tar", help="Write a single reproducible .tar.gz instead of a folder."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle at --out."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Copy a model folder into a bundle, write manifest.json (paths, sizes, SHA-256, provenance) and sign it."""
        try:
            res = export_bundle(model, out_path, key, tar=tar, overwrite=overwrite)
        except (BundleExportError, BundleKeyError) as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"{exc.filename or out_path}: {exc.strerror or exc}")
        summary = bundle_summary(res)
        if json_out:
            print_json(summary)
            return
        kind = "archive" if res.archive else "folder"
        out.print(f"wrote {kind} bundle {res.path}: {res.n_files} files, {res.manifest.total_bytes:,} bytes, "
                  f"signed by key {res.key_id}", highlight=False, soft_wrap=True)
        if res.archive_sha256:
            out.print(f"archive sha256 {res.archive_sha256}", highlight=False, soft_wrap=True)
        model_meta = summary["model"]
        missing = [k for k in ("training_window", "dataset_fingerprint", "offline_metrics")
                   if model_meta.get(k) is None]
        if missing:
            console.print(f"[yellow]note:[/] model.json has no {', '.join(missing)} (recorded as null)",
                          highlight=False, soft_wrap=True)

    @app.command("verify-bundle")
    def verify_bundle_cmd(
        bundle: Path = typer.Argument(..., help="Bundle folder or .tar.gz."),
        public_key: Path = typer.Option(..., "--public-key", help="Ed25519 public key (PEM)."),
        json_out: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    ) -> None:
        """Exit 0 only if the signature verifies, every listed file matches and nothing unlisted is present (else 1)."""
        try:
            key = load_public_key(public_key)
        except BundleKeyError as exc:
            fail(str(exc))
        if not bundle.exists():
            fail(f"{bundle}: not found")
        report = check_bundle(bundle, key)
        if json_out:
            print_json(report.to_json())
        elif report.ok:
            m = report.manifest
            assert m is not None
            out.print(f"OK {bundle}: signature by key {report.key_id} verified; {len(m.files)} files, "
                      f"{m.total_bytes:,} bytes match the manifest (created {m.doc.get('created_at')})",
                      highlight=False, soft_wrap=True)
        if not report.ok:
            if not json_out:
                reason = report.reason or "did not verify"
                reason = reason[len(f"{bundle}: "):] if reason.startswith(f"{bundle}: ") else reason
                console.print(f"[bold red]FAILED[/] {bundle}: {reason}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)
