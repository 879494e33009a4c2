"""A capsule's digest and signature: what lets a reader check that the capsule in hand is the
one a paper cites, and that its author vouched for it.

The digest is one sha256 over the sorted `sha256  path` lines of the manifest and of every
artifact it lists (a Merkle-style list: each line can be checked against a file). The manifest
enters without its image records and their build statements (`provenance/<variant>`): an image
is derived from the capsule (and recording one must not change the capsule's identity, nor the
label written into that image). Studies stored
after the freeze (a sweep, audits) are artifacts and do change it.

A signature signs that digest with Sigstore's model-signing library: the signed "model" is a
one-file folder holding the digest line (DESIGN.md: `sign` signs the capsule digest), so a
signature survives rebuilding images but not a new study, nor a first build (which stores the
wheelhouse and the base, inputs the digest covers), and anyone can check it with
`model_signing verify key` on such a folder. It is stored beside the manifest as SIGNATURE.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from pathlib import Path

from builder.errors import BadInput, IntegrityError
from builder.records.manifest import Manifest
from builder.records.replay import ReplayRecord
from builder.store import MANIFEST, PROVENANCE_PREFIX, record_bytes

SIGNATURE = "capsule.sig"  # the Sigstore bundle, beside manifest.json
DIGEST_FILE = "capsule.digest"  # the one file of the signed folder
_HEX = frozenset("0123456789abcdef")


def capsule_digest_lines(manifest: Manifest) -> list[str]:
    """The `sha256  path` lines the digest is taken over, sorted by path: neither an image
    record nor its build statement (`provenance/<variant>`) enters; both derive from it."""
    artifacts = {
        name: ref
        for name, ref in manifest.artifacts.items()
        if not name.startswith(PROVENANCE_PREFIX)
    }
    unimaged = manifest.model_copy(update={"images": {}, "artifacts": artifacts})
    lines = {MANIFEST: hashlib.sha256(record_bytes(unimaged)).hexdigest()}
    lines.update({ref.path: ref.sha256 for ref in artifacts.values()})
    return [f"{sha}  {path}" for path, sha in sorted(lines.items())]


def content_digest(manifest: Manifest) -> str:
    """The capsule's digest (hex sha256); its artifacts must have been verified against it."""
    text = "".join(line + "\n" for line in capsule_digest_lines(manifest))
    return hashlib.sha256(text.encode()).hexdigest()


def check_published(digest: str, published: str) -> None:
    """Exit 3 unless `published` (64 hex digits, `sha256:` allowed) is this capsule's digest."""
    wanted = published.strip().lower().removeprefix("sha256:")
    if len(wanted) != 64 or not set(wanted) <= _HEX:
        raise BadInput(f"--digest: {published!r} is not a sha256 (64 hex digits)")
    if wanted != digest:
        raise IntegrityError(
            f"digest: the capsule's is sha256:{digest}, not the published sha256:{wanted}"
        )


def _signed_folder(into: Path, digest: str) -> Path:
    folder = into / "capsule"
    folder.mkdir()
    (folder / DIGEST_FILE).write_text(f"sha256:{digest}\n")
    return folder


def sign(directory: Path, digest: str, key: Path, password: str | None = None) -> Path:
    """Sign the digest with an elliptic-curve private key (offline); write SIGNATURE."""
    from model_signing import hashing, signing

    try:
        config = signing.Config().use_elliptic_key_signer(private_key=key, password=password)
    except (OSError, ValueError, TypeError) as error:
        raise BadInput(f"{key}: not a usable private key ({_first_line(error)})") from None
    target = directory / SIGNATURE
    with tempfile.TemporaryDirectory(prefix="capsule-sign-") as tmp:
        folder = _signed_folder(Path(tmp), digest)
        bundle = Path(tmp) / SIGNATURE
        config.set_hashing_config(hashing.Config().use_file_serialization()).sign(folder, bundle)
        partial = target.with_name(f".{SIGNATURE}.partial")
        partial.write_bytes(bundle.read_bytes())
        partial.replace(target)
    return target


def signed_digest(directory: Path) -> str | None:
    """The digest the stored signature was made over (read from the bundle, not yet trusted);
    None when the capsule is not signed. Exit 3 on a bundle that cannot be read."""
    path = directory / SIGNATURE
    if path.is_symlink() or not path.exists():
        return None
    try:
        bundle = json.loads(path.read_bytes())
        payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        (resource,) = payload["predicate"]["resources"]
        signed_sha = resource["digest"]
    except (ValueError, KeyError, TypeError) as error:
        raise IntegrityError(f"{path}: not a readable signature ({_first_line(error)})") from None
    return signed_sha if isinstance(signed_sha, str) else None


def check_signature_covers(directory: Path, digest: str) -> None:
    """A stored signature must be over this capsule's digest (checked on every verify and
    import, with or without a key): exit 3 if the capsule changed since it was signed."""
    signed = signed_digest(directory)
    if signed is None:
        return
    if signed != _digest_file_sha(digest):
        raise IntegrityError(
            f"{directory / SIGNATURE}: signs another digest than the capsule's "
            f"sha256:{digest[:16]}…: the capsule changed since it was signed (a study "
            "stored into it, or an edit); sign it again"
        )


def verify_signature(directory: Path, digest: str, public_key: Path) -> None:
    """Exit 3 unless SIGNATURE is a valid signature of this digest by `public_key`'s owner."""
    from model_signing import hashing, verifying

    path = directory / SIGNATURE
    if path.is_symlink() or not path.is_file():
        raise IntegrityError(f"{directory}: not signed (no {SIGNATURE}); `capsule sign` it")
    check_signature_covers(directory, digest)
    try:
        config = verifying.Config().use_elliptic_key_verifier(public_key=public_key)
    except (OSError, ValueError, TypeError) as error:
        raise BadInput(f"{public_key}: not a usable public key ({_first_line(error)})") from None
    with tempfile.TemporaryDirectory(prefix="capsule-verify-") as tmp:
        folder = _signed_folder(Path(tmp), digest)
        try:
            config.set_hashing_config(hashing.Config().use_file_serialization()).verify(
                folder, path
            )
        except Exception as error:  # model-signing raises ValueError and crypto errors alike
            raise IntegrityError(
                f"{path}: the signature does not verify with {public_key} ({_first_line(error)})"
            ) from None


def check_trust(
    directory: Path,
    record: Manifest | ReplayRecord,
    published: str | None = None,
    public_key: Path | None = None,
) -> str | None:
    """`verify`'s checks after the re-hash: a capsule's digest (returned), its stored
    signature over that digest, and the published digest and signer when given."""
    if not isinstance(record, Manifest):
        if published or public_key:
            raise BadInput(f"{directory}: is a replay; --digest and --key check capsules")
        return None
    digest = content_digest(record)
    if published is not None:  # asked for first: its message names both digests
        check_published(digest, published)
    check_signature_covers(directory, digest)
    if public_key is not None:
        verify_signature(directory, digest, public_key)
    return digest


def _digest_file_sha(digest: str) -> str:
    return hashlib.sha256(f"sha256:{digest}\n".encode()).hexdigest()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
