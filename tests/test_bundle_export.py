"""Export of signed bundles: keys, manifest content, canonical signing, folder and archive layouts."""
from __future__ import annotations

import gzip
import json
import os
import stat
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from recs.bundle import (
    BundleExportError, BundleKeyError, check_bundle, export_bundle, generate_keypair, load_private_key,
    load_public_key, load_verified,
)
from recs.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, canonical_json, check_relpath, parse_manifest
from recs.bundle.errors import BundleVerificationError

from _bundle_fixtures import make_model


@pytest.fixture()
def keys(tmp_path: Path):
    return generate_keypair(tmp_path / "keys")


def test_keygen_writes_pem_pair_private_mode_0600(tmp_path: Path) -> None:
    kp = generate_keypair(tmp_path / "k")
    assert stat.S_IMODE(kp.private_key.stat().st_mode) == 0o600
    assert kp.private_key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert kp.public_key.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    priv, pub = load_private_key(kp.private_key), load_public_key(kp.public_key)
    assert priv.public_key() == pub
    with pytest.raises(BundleKeyError, match="already exists"):
        generate_keypair(tmp_path / "k")
    with pytest.raises(BundleKeyError, match="is a private key"):
        load_public_key(kp.private_key)
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(BundleKeyError, match="not a PEM"):
        load_private_key(tmp_path / "junk.pem")


def test_export_folder_lists_every_file_with_hash_and_provenance(tmp_path: Path, keys) -> None:
    model = make_model(tmp_path)
    when = datetime(2026, 2, 1, 12, 0, tzinfo=timezone.utc)
    res = export_bundle(model, tmp_path / "b", keys.private_key, created_at=when)
    doc = json.loads((tmp_path / "b" / MANIFEST_NAME).read_bytes())
    paths = [f["path"] for f in doc["files"]]
    assert paths == sorted(["model.json", "retrieval/items.faiss", "ranker/lgbm.txt", "feature_spec.json",
                            "fallback/popular.parquet", "rerank.json"])
    for f in doc["files"]:
        data = (model / f["path"]).read_bytes()
        assert f["size"] == len(data)
        import hashlib
        assert f["sha256"] == hashlib.sha256(data).hexdigest()
        assert (tmp_path / "b" / f["path"]).read_bytes() == data
    assert doc["created_at"] == "2026-02-01T12:00:00Z"
    assert doc["model"]["training_window"] == {"start": "2026-01-01T00:00:00Z", "end": "2026-01-08T00:00:00Z"}
    assert doc["model"]["dataset_fingerprint"] == "sha256:abcd"
    assert doc["model"]["offline_metrics"] == {"ndcg@10": 0.3125, "recall@100": None}  # NaN -> null
    assert doc["toolkit"]["name"] == "shopnow-recs" and doc["dependencies"]["python"]
    assert doc["dependencies"]["numpy"] is not None
    assert doc["signer"]["key_id"] == keys.key_id == res.key_id
    # manifest.json is stored as the canonical bytes that were signed; the signature file is not listed
    raw = (tmp_path / "b" / MANIFEST_NAME).read_bytes()
    assert raw == canonical_json(doc)
    assert SIGNATURE_NAME not in paths and MANIFEST_NAME not in paths
    assert check_bundle(tmp_path / "b", keys.public_key).ok


def test_export_without_model_json_records_nulls(tmp_path: Path, keys) -> None:
    model = make_model(tmp_path, with_model_json=False)
    res = export_bundle(model, tmp_path / "b", keys.private_key)
    assert res.manifest.doc["model"] == {"training_window": None, "dataset_fingerprint": None,
                                          "offline_metrics": None, "model_id": None}
    assert check_bundle(tmp_path / "b", keys.public_key).ok


def test_export_rejects_bad_inputs_with_one_line_errors(tmp_path: Path, keys) -> None:
    model = make_model(tmp_path)
    with pytest.raises(BundleExportError, match="model folder not found"):
        export_bundle(tmp_path / "nope", tmp_path / "b", keys.private_key)
    (model / "manifest.json").write_text("{}")
    with pytest.raises(BundleExportError, match="reserved"):
        export_bundle(model, tmp_path / "b", keys.private_key)
    (model / "manifest.json").unlink()
    os.symlink(model / "rerank.json", model / "link.json")
    with pytest.raises(BundleExportError, match="symlinks are not allowed"):
        export_bundle(model, tmp_path / "b", keys.private_key)
    (model / "link.json").unlink()
    (model / "model.json").write_text("{not json")
    with pytest.raises(BundleExportError, match=r"model\.json: not valid JSON"):
        export_bundle(model, tmp_path / "b", keys.private_key)
    assert not (tmp_path / "b").exists()  # nothing half-written under the final name
    with pytest.raises(BundleExportError, match="inside the model folder"):
        export_bundle(model, model / "bundle", keys.private_key)


def test_export_refuses_existing_output_unless_overwrite(tmp_path: Path, keys) -> None:
    model = make_model(tmp_path)
    export_bundle(model, tmp_path / "b", keys.private_key)
    with pytest.raises(BundleExportError, match="not empty"):
        export_bundle(model, tmp_path / "b", keys.private_key)
    export_bundle(model, tmp_path / "b", keys.private_key, overwrite=True)
    assert check_bundle(tmp_path / "b", keys.public_key).ok


def test_tar_export_is_reproducible_and_safe(tmp_path: Path, keys) -> None:
    model = make_model(tmp_path)
    when = datetime(2026, 2, 1, tzinfo=timezone.utc)
    a = export_bundle(model, tmp_path / "a.tar.gz", keys.private_key, tar=True, created_at=when)
    b = export_bundle(model, tmp_path / "b.tar.gz", keys.private_key, tar=True, created_at=when)
    assert a.archive_sha256 == b.archive_sha256  # same inputs, same bytes (Ed25519 signatures are deterministic)
    with tarfile.open(tmp_path / "a.tar.gz") as t:
        members = t.getmembers()
    assert [m.name for m in members][:2] == [MANIFEST_NAME, SIGNATURE_NAME]
    assert all(m.isreg() and m.uid == 0 and m.mode == 0o644 for m in members)
    assert not list(tmp_path.glob(".recs-bundle-*"))  # staging folder removed
    assert check_bundle(tmp_path / "a.tar.gz", keys.public_key).ok


def test_load_verified_archive_extracts_to_private_temp_and_cleans_up(tmp_path: Path, keys) -> None:
    model = make_model(tmp_path)
    export_bundle(model, tmp_path / "a.tar.gz", keys.private_key, tar=True)
    tmp_root = tmp_path / "tmproot"
    tmp_root.mkdir()
    with load_verified(tmp_path / "a.tar.gz", keys.public_key, tmp_root=tmp_root) as vb:
        assert vb.temporary and vb.path.parent == tmp_root
        assert stat.S_IMODE(vb.path.stat().st_mode) == 0o700
        assert vb.read_bytes("ranker/lgbm.txt") == (model / "ranker" / "lgbm.txt").read_bytes()
        assert vb.read_json("feature_spec.json") == {"features": ["a", "b"]}
        assert vb.model["dataset_fingerprint"] == "sha256:abcd"
        assert sorted(vb.files("retrieval/")) == ["retrieval/items.faiss"]
        with pytest.raises(BundleVerificationError, match="not listed"):
            vb.file("../../etc/passwd")
        # a file edited after verification is refused at read time
        (vb.path / "rerank.json").write_text('{"diversity": 0.9}')
        with pytest.raises(BundleVerificationError, match="changed after verification"):
            vb.read_bytes("rerank.json")
        with pytest.raises(BundleVerificationError, match="changed after verification"):
            vb.recheck()
    assert not vb.path.exists()


def test_load_verified_folder_returns_it_in_place(tmp_path: Path, keys) -> None:
    model = make_model(tmp_path)
    export_bundle(model, tmp_path / "b", keys.private_key)
    vb = load_verified(tmp_path / "b", keys.public_key)
    assert vb.path == tmp_path / "b" and not vb.temporary
    vb.recheck()
    vb.close()
    assert (tmp_path / "b").is_dir()  # a folder bundle is never deleted


@pytest.mark.parametrize("rel", ["../x", "/abs", "a/../b", "a//b", "./a", "a\\b", "C:x", ""])
def test_unsafe_relative_paths_are_rejected(rel: str) -> None:
    with pytest.raises(BundleVerificationError):
        check_relpath(rel)


def test_manifest_schema_rejects_duplicates_and_bad_digests() -> None:
    base = {"format": "recs-bundle", "format_version": 1}
    good = {"path": "a", "size": 1, "sha256": "0" * 64}
    parse_manifest(canonical_json({**base, "files": [good]}))
    for files, msg in [
        ([good, good], "duplicate path"),
        ([{**good, "sha256": "xyz"}], "sha256"),
        ([{**good, "size": -1}], "size"),
        ([{**good, "path": "../a"}], "'..'"),
        ([good, {**good, "path": "a/b"}], "both as a file and a folder"),
        ([{**good, "path": "manifest.sig"}], "reserved"),
    ]:
        with pytest.raises(BundleVerificationError, match=msg):
            parse_manifest(canonical_json({**base, "files": files}))
    with pytest.raises(BundleVerificationError, match="duplicate key"):
        parse_manifest(b'{"format":"recs-bundle","format":"x","format_version":1,"files":[]}')


def test_export_refuses_an_output_that_contains_the_model_folder(tmp_path: Path, keys) -> None:
    """`--out runs` for `--model runs/m1` would replace runs/ (model and siblings included): refused, nothing moved."""
    runs = tmp_path / "runs"
    runs.mkdir()
    model = make_model(runs)
    (runs / "m0.txt").write_text("a sibling run")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for out, tar in [(runs, False), (runs, True), (tmp_path, False), (model, False)]:
        with pytest.raises(BundleExportError, match="model folder"):
            export_bundle(model, out, keys.private_key, tar=tar, overwrite=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_overwrite_replaces_only_a_bundle(tmp_path: Path, keys) -> None:
    model = make_model(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a bundle")
    with pytest.raises(BundleExportError, match="not a bundle folder"):
        export_bundle(model, other, keys.private_key, overwrite=True)
    assert (other / "notes.txt").read_text() == "not a bundle"
    (tmp_path / "notes.txt").write_text("not an archive")
    (tmp_path / "data.tar.gz").write_bytes(gzip.compress(b"x" * 1024))      # gzip, but no bundle inside
    for plain in (tmp_path / "notes.txt", tmp_path / "data.tar.gz"):
        before = plain.read_bytes()
        with pytest.raises(BundleExportError, match="not a bundle archive"):
            export_bundle(model, plain, keys.private_key, tar=True, overwrite=True)
        assert plain.read_bytes() == before
    # a bundle of either kind is still replaced
    export_bundle(model, tmp_path / "b", keys.private_key)
    export_bundle(model, tmp_path / "b", keys.private_key, overwrite=True)
    export_bundle(model, tmp_path / "b.tar.gz", keys.private_key, tar=True)
    export_bundle(model, tmp_path / "b.tar.gz", keys.private_key, tar=True, overwrite=True)
    assert check_bundle(tmp_path / "b", keys.public_key).ok and check_bundle(tmp_path / "b.tar.gz", keys.public_key).ok


def test_deeply_nested_model_json_is_a_clean_export_error(tmp_path: Path, keys) -> None:
    model = make_model(tmp_path)
    (model / "model.json").write_text("[" * 3000)
    with pytest.raises(BundleExportError, match="not valid JSON"):
        export_bundle(model, tmp_path / "b", keys.private_key)


def test_manifest_provenance_is_read_from_the_bundled_model_json(tmp_path: Path, keys, monkeypatch) -> None:
    """model.json rewritten while the export runs: the manifest's `model` describes the copy that was hashed."""
    import recs.bundle.export as export_mod

    model = make_model(tmp_path)
    real_copy = export_mod._copy_hashing
    rewritten: list[bool] = []

    def copy(src: Path, dst: Path) -> tuple[int, str]:
        if src.name != "model.json" and not rewritten:    # fallback/... is copied before model.json
            doc = json.loads((model / "model.json").read_text())
            (model / "model.json").write_text(json.dumps({**doc, "model_id": "rewritten"}))
            rewritten.append(True)
        return real_copy(src, dst)

    monkeypatch.setattr(export_mod, "_copy_hashing", copy)
    export_bundle(model, tmp_path / "b", keys.private_key)
    doc = json.loads((tmp_path / "b" / MANIFEST_NAME).read_bytes())
    assert rewritten and json.loads((tmp_path / "b" / "model.json").read_text())["model_id"] == "rewritten"
    assert doc["model"]["model_id"] == "rewritten"
    assert check_bundle(tmp_path / "b", keys.public_key).ok


def test_load_verified_copies_a_small_folder_bundle_and_checks_every_byte(tmp_path: Path, keys, monkeypatch) -> None:
    """A folder bundle within `copy_max_bytes` is served from a private copy checked against the manifest, so a
    file changed after verification is refused, never loaded."""
    import hashlib

    import recs.bundle.load as load_mod

    model = make_model(tmp_path)
    b = tmp_path / "b"
    export_bundle(model, b, keys.private_key)
    tmp_root = tmp_path / "tmproot"
    tmp_root.mkdir()
    with load_verified(b, keys.public_key, tmp_root=tmp_root, copy_max_bytes=10**6) as vb:
        assert vb.temporary and vb.path.parent == tmp_root and vb.source == b
        assert stat.S_IMODE(vb.path.stat().st_mode) == 0o700
        for rel in [f.path for f in vb.manifest.files] + [MANIFEST_NAME, SIGNATURE_NAME]:
            assert (vb.path / rel).read_bytes() == (b / rel).read_bytes()
        assert vb.manifest_sha256 == hashlib.sha256((b / MANIFEST_NAME).read_bytes()).hexdigest()
        vb.recheck()
    assert not vb.path.exists() and (b / MANIFEST_NAME).is_file()
    in_place = load_verified(b, keys.public_key, copy_max_bytes=10)     # larger than the bound: used in place
    assert in_place.path == b and not in_place.temporary
    real_verify = load_mod.verify_bundle

    def verify_then_edit(*a, **k):
        report = real_verify(*a, **k)
        (b / "rerank.json").write_text('{"diversity": 0.9}')           # after verification, before the copy
        return report

    monkeypatch.setattr(load_mod, "verify_bundle", verify_then_edit)
    with pytest.raises(BundleVerificationError, match="rerank.json changed after verification"):
        load_verified(b, keys.public_key, tmp_root=tmp_root, copy_max_bytes=10**6)
    assert not any(tmp_root.iterdir())
