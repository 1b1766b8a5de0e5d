"""Pseudonyms for the report (``report.pseudonymise``).

Data-use agreements such as ADNI's forbid publishing participant ids, and a plain hash of an id
is not a pseudonym: ADNI ids are enumerable (site, ``S``, a 4-digit number; BIDS writes them
``sub-ADNI002S0295``), so anyone can hash every possible id and read the table back. A keyed
hash is: HMAC-SHA256 with a secret key that never enters the report (a file beside the results,
``results/private/pseudonym.key`` unless ``report.pseudonym_key`` names one; the same key gives the
same pseudonyms in every run and report, another key others).

What is replaced, in every table the report registers (TSV and JSON text):

- every BIDS participant id (``sub-<label>``, also inside file names) by ``sub-`` and 12 hex
  digits of its keyed hash (48 bits: for 10,000 participants the chance that two share a
  pseudonym is below 2e-7);
- every file path (a token with a ``/`` that starts with ``/``, ``~`` or ``.``, ends with a data
  file suffix or names a participant) by its file name: the folders (user names, sites, mount
  points) go, the name keeps what the reader needs (session, modality), pseudonymised.

``results/`` keeps the real ids; only the report's copies (``results/pseudonymised/...``) are
pseudonymised.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from .io import InputError, atomic_path

PARTICIPANT = re.compile(r"\bsub-[A-Za-z0-9]+")
#: a token with a slash: no whitespace, quotes, separators or brackets inside
TOKEN = re.compile(r"[^\s\"'`,;=()\[\]{}<>|]*/[^\s\"'`,;=()\[\]{}<>|]*")
DATA_SUFFIXES = (".nii.gz", ".nii", ".tsv", ".csv", ".json", ".yaml", ".yml", ".pt", ".npy", ".log", ".png",
                 ".svg", ".html", ".mat", ".txt")
KEY_BYTES = 32


def new_key(path: str | os.PathLike) -> bool:
    """Write a fresh random key (64 hex digits, readable by its owner only) unless ``path``
    exists; True when one was written."""
    path = Path(path)
    if path.exists():
        return False
    with atomic_path(path) as tmp:
        tmp.write_text(secrets.token_hex(KEY_BYTES) + "\n")
        tmp.chmod(0o600)
    return True


def read_key(path: str | os.PathLike) -> bytes:
    """The key in ``path`` (any text of at least 32 characters; whitespace around it ignored)."""
    path = Path(path)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise InputError(f"{path}: pseudonym key file not found (report.pseudonym_key; leave it null to have "
                         "the workflow create results/private/pseudonym.key)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: pseudonym key file could not be read ({exc})") from None
    if len(text) < 32:
        raise InputError(f"{path}: pseudonym key too short ({len(text)} characters; at least 32, e.g. "
                         "`openssl rand -hex 32`)")
    return text.encode()


def pseudonym(participant_id: str, key: bytes) -> str:
    """``sub-`` + 12 hex digits of HMAC-SHA256(key, id): the same for the same key and id."""
    return "sub-" + hmac.new(key, participant_id.encode(), hashlib.sha256).hexdigest()[:12]


def _is_path(token: str) -> bool:
    return (token.startswith(("/", "~", "."))
            or token.lower().endswith(DATA_SUFFIXES)
            or PARTICIPANT.search(token) is not None)


def pseudonymise_text(text: str, key: bytes) -> str:
    """``text`` with every file path cut to its file name, then every participant id replaced by
    its pseudonym (see the module's docstring)."""
    def cut(m: re.Match) -> str:
        token = m.group(0)
        if not _is_path(token):
            return token
        name = token.rstrip("/").rsplit("/", 1)[-1]
        return name or "/"

    text = TOKEN.sub(cut, text)
    return PARTICIPANT.sub(lambda m: pseudonym(m.group(0), key), text)


