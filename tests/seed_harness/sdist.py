"""Obtain the seed's sdist (``py-opencode-wrapper==0.3.8``) and extract its ``tests/``.

The sdist is fetched once with ``pip download --no-deps --no-binary :all:`` (PyPI is the only
network CI has) into a git-ignored cache at the repository root (``.seed/``) and checked against a
pinned sha256 every time it is used, so a corrupted or substituted archive fails loudly instead of
running other tests. Only ``<root>/tests/*.py`` regular files are extracted — never the seed's own
``opencode_wrapper`` package, which would shadow ours — and never anything whose name could escape
the destination directory.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

SEED_PROJECT = "py-opencode-wrapper"
SEED_VERSION = "0.3.8"
SEED_ARCHIVE = f"py_opencode_wrapper-{SEED_VERSION}.tar.gz"
#: sha256 of the sdist on PyPI (measured with ``sha256sum`` after ``pip download``).
SEED_SHA256 = "e378adc7a31698482f47405c980498c31518367d93d773efefcc0bab3b007b95"
#: The git-ignored cache folder at the repository root.
REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".seed"
_DOWNLOAD_TIMEOUT_S = 300


class SeedArchiveError(RuntimeError):
    """The seed sdist could not be obtained, or is not the pinned one."""


@dataclass(frozen=True)
class SeedTests:
    """The seed's test files extracted to ``root / "tests"``."""

    root: Path
    archive: Path

    @property
    def tests_dir(self) -> Path:
        return self.root / "tests"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def obtain_archive(cache_dir: Path = CACHE_DIR, *, expected_sha256: str = SEED_SHA256) -> Path:
    """The cached sdist, downloaded first if missing; raises :class:`SeedArchiveError` on a bad hash.

    Idempotent and safe to run from two processes at once: the download lands in a private
    temporary folder and is moved into place atomically after its hash is checked.
    """
    archive = cache_dir / SEED_ARCHIVE
    if archive.is_file():
        actual = sha256_of(archive)
        if actual != expected_sha256:
            raise SeedArchiveError(
                f"{archive} has sha256 {actual}, expected {expected_sha256}; delete it to download again"
            )
        return archive
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="download-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
            tmp,
            f"{SEED_PROJECT}=={SEED_VERSION}",
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
        downloaded = Path(tmp) / SEED_ARCHIVE
        if done.returncode != 0 or not downloaded.is_file():
            raise SeedArchiveError(
                f"`{' '.join(command)}` failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}"
            )
        actual = sha256_of(downloaded)
        if actual != expected_sha256:
            raise SeedArchiveError(
                f"downloaded {SEED_ARCHIVE} has sha256 {actual}, expected {expected_sha256}"
            )
        os.replace(downloaded, archive)
    return archive


def extract_tests(archive: Path, dest: Path) -> SeedTests:
    """Write the archive's ``<top>/tests/*.py`` files to ``dest/tests`` (nothing else)."""
    tests_dir = dest / "tests"
    tests_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if len(parts) != 3 or parts[1] != "tests" or not member.isfile():
                continue
            name = parts[2]
            if not name.endswith(".py") or name in (".", "..") or "/" in name or "\\" in name:
                continue
            source = tar.extractfile(member)
            if source is None:
                continue
            (tests_dir / name).write_bytes(source.read())
            count += 1
    if count == 0:
        raise SeedArchiveError(f"{archive} holds no tests/*.py files")
    return SeedTests(dest, archive)


def seed_tests(dest: Path, cache_dir: Path = CACHE_DIR) -> SeedTests:
    """Obtain (or reuse) the verified sdist and extract its tests under ``dest``."""
    return extract_tests(obtain_archive(cache_dir), dest)
