"""verify-bundle: one test per failure reason, for folders and .tar.gz archives (incl. unsafe archives)."""
from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from recs.bundle import check_bundle, export_bundle, generate_keypair, load_verified
from recs.bundle.errors import BundleVerificationError
from recs.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME
from _bundle_fixtures import make_model


@pytest.fixture()
def env(tmp_path: Path):
    keys = generate_keypair(tmp_path / "keys")
    model = make_model(tmp_path)
    export_bundle(model, tmp_path / "b", keys.private_key)
    export_bundle(model, tmp_path / "b.tar.gz", keys.private_key, tar=True)
    return keys, tmp_path


def reason(bundle: Path, pub: Path) -> str:
    rep = check_bundle(bundle, pub)
    assert not rep.ok
    assert rep.reason and "\n" not in rep.reason
    return rep.reason


def test_intact_bundles_verify(env) -> None:
    keys, d = env
    for b in (d / "b", d / "b.tar.gz"):
        rep = check_bundle(b, keys.public_key)
        assert rep.ok and rep.reason is None and len(rep.manifest.files) == 6


def test_wrong_key(env) -> None:
    keys, d = env
    other = generate_keypair(d / "other")
    for b in (d / "b", d / "b.tar.gz"):
        assert "wrong key" in reason(b, other.public_key)


def test_edited_manifest(env) -> None:
    keys, d = env
    m = d / "b" / MANIFEST_NAME
    doc = json.loads(m.read_bytes())
    doc["model"]["offline_metrics"]["ndcg@10"] = 0.99
    m.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))
    assert "modified after signing" in reason(d / "b", keys.public_key)


def test_whitespace_only_manifest_edit_is_also_rejected(env) -> None:
    keys, d = env
    m = d / "b" / MANIFEST_NAME
    m.write_bytes(m.read_bytes() + b"\n")
    assert "modified after signing" in reason(d / "b", keys.public_key)


def test_manifest_hash_edited_to_match_a_changed_file_is_rejected(env) -> None:
    keys, d = env
    import hashlib
    f = d / "b" / "rerank.json"
    f.write_text('{"diversity": 0.0, "max_per_seller": 99}')
    m = d / "b" / MANIFEST_NAME
    doc = json.loads(m.read_bytes())
    for e in doc["files"]:
        if e["path"] == "rerank.json":
            e["size"], e["sha256"] = f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest()
    m.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))
    assert "modified after signing" in reason(d / "b", keys.public_key)


def test_missing_signature(env) -> None:
    keys, d = env
    (d / "b" / SIGNATURE_NAME).unlink()
    assert "manifest.sig is missing (unsigned bundle)" in reason(d / "b", keys.public_key)


def test_corrupt_signature_file(env) -> None:
    keys, d = env
    (d / "b" / SIGNATURE_NAME).write_text('{"algorithm":"ed25519","signature":"!!!"}')
    assert "base64" in reason(d / "b", keys.public_key)


def test_changed_file_same_size(env) -> None:
    keys, d = env
    f = d / "b" / "retrieval" / "items.faiss"
    data = bytearray(f.read_bytes())
    data[100] ^= 0xFF
    f.write_bytes(bytes(data))
    assert reason(d / "b", keys.public_key) == "changed file retrieval/items.faiss (sha256 mismatch)"


def test_changed_file_size(env) -> None:
    keys, d = env
    with open(d / "b" / "ranker" / "lgbm.txt", "ab") as fh:
        fh.write(b"x")
    assert reason(d / "b", keys.public_key).startswith("changed file ranker/lgbm.txt (size")


def test_missing_file(env) -> None:
    keys, d = env
    (d / "b" / "fallback" / "popular.parquet").unlink()
    r = reason(d / "b", keys.public_key)
    assert r.startswith("missing file fallback/popular.parquet")


def test_extra_file(env) -> None:
    keys, d = env
    (d / "b" / "ranker" / "evil.pkl").write_bytes(b"cos\nsystem\n")
    assert reason(d / "b", keys.public_key) == "unlisted file ranker/evil.pkl"


def test_extra_empty_folder(env) -> None:
    keys, d = env
    (d / "b" / "plugins").mkdir()
    assert reason(d / "b", keys.public_key) == "unlisted folder plugins/"


def test_symlink_in_folder_bundle(env) -> None:
    keys, d = env
    target = d / "b" / "rerank.json"
    os.rename(target, d / "elsewhere.json")
    os.symlink(d / "elsewhere.json", target)  # same bytes, but through a link
    assert "symlink rerank.json" in reason(d / "b", keys.public_key)


def test_several_problems_are_counted_in_the_one_line_reason(env) -> None:
    keys, d = env
    (d / "b" / "rerank.json").unlink()
    (d / "b" / "x").write_text("1")
    rep = check_bundle(d / "b", keys.public_key)
    assert rep.reason == "missing file rerank.json (and 1 more problem)" and len(rep.problems) == 2


def test_not_a_bundle(env) -> None:
    keys, d = env
    (d / "plain.txt").write_text("hello")
    assert "neither a bundle folder nor" in reason(d / "plain.txt", keys.public_key)
    (d / "empty").mkdir()
    assert "manifest.json is missing" in reason(d / "empty", keys.public_key)


# ---------------------------------------------------------------- archives

def _rewrite_tar(src: Path, dst: Path, edit) -> None:
    """Copy the archive's members through `edit(members) -> members` ((TarInfo, bytes|None) pairs)."""
    with tarfile.open(src) as t:
        members = [(m, t.extractfile(m).read() if m.isreg() else None) for m in t.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for info, data in edit(members):
            if data is not None:
                info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    dst.write_bytes(gzip.compress(buf.getvalue()))


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type, i.size, i.linkname = kind, size, linkname
    return i


def test_archive_changed_missing_and_extra_member(env) -> None:
    keys, d = env

    def change(ms):
        return [(i, b"tampered\n" if i.name == "ranker/lgbm.txt" else data) for i, data in ms]

    def drop(ms):
        return [(i, data) for i, data in ms if i.name != "rerank.json"]

    def add(ms):
        return ms + [(_info("ranker/evil.pkl", size=3), b"abc")]

    for fn, want in [(change, "changed file ranker/lgbm.txt"), (drop, "missing file rerank.json"),
                     (add, "unlisted file ranker/evil.pkl")]:
        out = d / f"{fn.__name__}.tar.gz"
        _rewrite_tar(d / "b.tar.gz", out, fn)
        r = reason(out, keys.public_key)
        assert r.startswith(want) if fn is change else r == want


@pytest.mark.parametrize("member,want", [
    (_info("../escape.txt", size=1), "unsafe"),
    (_info("/etc/cron.d/x", size=1), "unsafe"),
    (_info("ranker/../../escape", size=1), "unsafe"),
    (_info("link", tarfile.SYMTYPE, linkname="/etc/passwd"), "is a symlink"),
    (_info("hard", tarfile.LNKTYPE, linkname="model.json"), "is a hard link"),
    (_info("dev", tarfile.CHRTYPE), "is a character device"),
    (_info("blk", tarfile.BLKTYPE), "is a block device"),
    (_info("fifo", tarfile.FIFOTYPE), "is a FIFO"),
    (_info("model.json", size=1), "duplicate"),
])
def test_unsafe_archive_member_rejected_before_anything_is_extracted(env, member, want) -> None:
    keys, d = env
    evil = d / "evil.tar.gz"
    data = b"x" if member.size else None

    # the unsafe member goes LAST, after all legitimate members (a streaming extractor would already have written them)
    _rewrite_tar(d / "b.tar.gz", evil, lambda ms: ms + [(member, data)])
    r = reason(evil, keys.public_key)
    assert want in r and str(evil) in r
    tmp_root = d / "tmproot"
    tmp_root.mkdir(exist_ok=True)
    with pytest.raises(BundleVerificationError, match=want):
        load_verified(evil, keys.public_key, tmp_root=tmp_root)
    assert list(tmp_root.iterdir()) == []  # nothing extracted, no temp folder left behind
    assert not (d / "escape.txt").exists() and not (d.parent / "escape").exists()


@pytest.mark.parametrize("cut", [0.5, 0.9, -1, -4, -8])
def test_truncated_archive(env, cut) -> None:
    keys, d = env
    data = (d / "b.tar.gz").read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else len(data) + cut
    (d / "t.tar.gz").write_bytes(data[:n])
    r = reason(d / "t.tar.gz", keys.public_key)
    assert "truncated archive" in r or "corrupt archive" in r


def test_trailing_garbage_after_archive(env) -> None:
    keys, d = env
    raw = gzip.decompress((d / "b.tar.gz").read_bytes())
    (d / "g.tar.gz").write_bytes(gzip.compress(raw + b"\x00" * 2048 + b"hidden payload" * 100))
    assert "unexpected data after the end" in reason(d / "g.tar.gz", keys.public_key)


def test_archive_swapped_after_verification_is_caught_on_extract(env, monkeypatch) -> None:
    """load_verified re-hashes every byte it extracts; an archive replaced between the two passes fails."""
    keys, d = env
    import recs.bundle.load as load_mod

    good = d / "b.tar.gz"
    bad = d / "swap.tar.gz"
    _rewrite_tar(good, bad, lambda ms: [(i, b"swapped!\n" if i.name == "ranker/lgbm.txt" else x) for i, x in ms])
    real = load_mod.extract_checked

    def swapped_extract(path, dest, expected, limits=None):
        return real(bad, dest, expected, limits)

    monkeypatch.setattr(load_mod, "extract_checked", swapped_extract)
    with pytest.raises(BundleVerificationError, match="changed after verification|hash mismatch"):
        load_verified(good, keys.public_key, tmp_root=d)
    assert not list(d.glob("recs-bundle-*"))


def test_random_corruption_of_an_archive_never_verifies_and_never_crashes(env) -> None:
    """Flip one bit anywhere in a signed archive (seeded, 60+ positions): a one-line failure and no exception,
    unless the flip left the archive's content intact (gzip header hint bits such as FTEXT, MTIME, OS)."""
    import random

    keys, d = env
    data = (d / "b.tar.gz").read_bytes()
    rng = random.Random(7)
    positions = sorted({rng.randrange(len(data)) for _ in range(60)} | {0, 1, 3, 10, len(data) - 1})
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 1 << rng.randrange(8)
        (d / "c.tar.gz").write_bytes(bytes(bad))
        rep = check_bundle(d / "c.tar.gz", keys.public_key)
        if rep.ok:
            assert pos < 10 and gzip.decompress(bytes(bad)) == gzip.decompress(data), f"byte {pos}"
        else:
            assert rep.reason and "\n" not in rep.reason


def test_load_verified_refuses_a_folder_that_fails(env) -> None:
    keys, d = env
    (d / "b" / "ranker" / "lgbm.txt").write_text("evil")
    with pytest.raises(BundleVerificationError, match="changed file ranker/lgbm.txt"):
        load_verified(d / "b", keys.public_key)


def test_reason_stays_one_line_for_hostile_file_names(env) -> None:
    keys, d = env
    (d / "b" / "evil\nname").write_text("x")
    r = reason(d / "b", keys.public_key)
    assert r == "unlisted file evil\\nname"


@pytest.mark.parametrize("sig", [b"[" * 3000, b'{"a":' * 800, b"\xff\xfe", b"[]"])
def test_malformed_signature_file_is_a_reason_never_a_crash(env, sig: bytes) -> None:
    """manifest.sig is parsed before anything is trusted: any bytes (too deeply nested for the JSON parser
    included) give a one-line reason from check_bundle and a BundleVerificationError from load_verified."""
    keys, d = env
    (d / "b" / SIGNATURE_NAME).write_bytes(sig)
    assert reason(d / "b", keys.public_key).startswith("manifest.sig: not")
    with pytest.raises(BundleVerificationError, match="manifest.sig"):
        load_verified(d / "b", keys.public_key)
    out = d / "deep.tar.gz"
    _rewrite_tar(d / "b.tar.gz", out, lambda ms: [(i, sig if i.name == SIGNATURE_NAME else data) for i, data in ms])
    assert reason(out, keys.public_key).startswith("manifest.sig: not")


def test_archive_with_an_unneeded_folder_fails_as_a_folder_bundle_does(env) -> None:
    """Folder members are checked in an archive as folders are on disk: one no listed file needs is unlisted."""
    keys, d = env
    for j, extra in enumerate([["plugins"], ["ranker/x", "plugins/a/b"], ["ranker", "fallback"]]):
        folder, archive = d / f"dirs{j}", d / f"dirs{j}.tar.gz"
        shutil.copytree(d / "b", folder)
        for name in extra:
            (folder / name).mkdir(parents=True, exist_ok=True)
        _rewrite_tar(d / "b.tar.gz", archive, lambda ms, extra=extra: ms + [
            (_info(n, tarfile.DIRTYPE), None) for n in extra])
        want = check_bundle(folder, keys.public_key).problems
        assert check_bundle(archive, keys.public_key).problems == want, extra
        assert want == {0: ["unlisted folder plugins/"], 2: []}.get(j, want)
    assert want == [] and len(check_bundle(d / "dirs1", keys.public_key).problems) == 4
