"""Names and versions of the docstore's on-disk format (read by :mod:`.rows` and
:mod:`.persist`).

A saved store is a directory with ``manifest.json`` (``format``, ``format_version``, the
store's settings and every file's sha256), ``int_ids.npy``, ``docs.sqlite``, ``index.faiss``
and the files of its vector rows, which set the version:

1. raw vectors: ``vectors.npy``;
2. refine codes: ``codes.npy`` + ``refine_codec.faiss`` (no raw vectors);
3. in-index codes: the codes live in ``index.faiss``, ``lists.npy`` holds each row's IVF list;
4. version 3 + float16 unit vectors on disk: ``disk_vectors.npy``.
"""
from __future__ import annotations

FORMAT = "retgen-docstore"
FORMAT_VERSION = 1          # raw vectors (vectors.npy)
CODES_FORMAT_VERSION = 2    # refine codes (codes.npy + refine_codec.faiss), no raw vectors
IN_INDEX_FORMAT_VERSION = 3  # codes only in index.faiss (+ lists.npy), no raw vectors
DISK_FORMAT_VERSION = 4     # version 3 + float16 vectors on disk (disk_vectors.npy)
VERSIONS = (FORMAT_VERSION, CODES_FORMAT_VERSION, IN_INDEX_FORMAT_VERSION, DISK_FORMAT_VERSION)

MANIFEST_FILE = "manifest.json"
IDS_FILE = "int_ids.npy"        # the int id of each row, ascending
VECTORS_FILE = "vectors.npy"    # version 1
CODES_FILE = "codes.npy"        # version 2
CODEC_FILE = "refine_codec.faiss"
LISTS_FILE = "lists.npy"        # versions 3 and 4
DISK_FILE = "disk_vectors.npy"  # version 4: float16 unit vectors (disk_vectors=True)
DOCS_FILE = "docs.sqlite"
INDEX_FILE = "index.faiss"

__all__ = ["FORMAT", "FORMAT_VERSION", "CODES_FORMAT_VERSION", "IN_INDEX_FORMAT_VERSION",
           "DISK_FORMAT_VERSION", "VERSIONS", "MANIFEST_FILE", "IDS_FILE", "VECTORS_FILE",
           "CODES_FILE", "CODEC_FILE", "LISTS_FILE", "DISK_FILE", "DOCS_FILE", "INDEX_FILE"]
