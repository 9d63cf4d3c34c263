"""The log's Ed25519 signing key: generated once, kept as PKCS#8 PEM with mode 0600."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import LedgerError
from .note import Signer


class KeyFileError(LedgerError):
    """The key file is missing, unreadable, too widely readable, or not an Ed25519 key."""


def generate_key_file(path: Path) -> None:
    """Writes a new Ed25519 key to `path` (PKCS#8 PEM, 0600); refuses to overwrite."""
    write_key_file(path, Ed25519PrivateKey.generate())


def write_key_file(path: Path, key: Ed25519PrivateKey) -> None:
    """Writes `key` to `path` as PKCS#8 PEM, mode 0600, durably; refuses to overwrite."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    create_private_file(path, pem)


def create_private_file(path: Path, data: bytes) -> None:
    """Creates `path` holding `data`, mode 0600, in a directory made 0700 if it is new.

    The file appears whole or not at all (written and fsynced under a temporary name, then
    hard-linked into place), so a process started beside this one never reads it half
    written; FileExistsError when it already exists, which is never replaced.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def load_signer(path: Path, name: str) -> Signer:
    """Loads the log key; a key readable by group or others is refused."""
    try:
        mode = path.stat().st_mode
        pem = path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read signing key {path}: {e.strerror}") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"signing key {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{path} is not an unencrypted PKCS#8 PEM key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return Signer(name, key)


def load_or_create_signer(path: Path, name: str) -> Signer:
    """The key at `path`, created on first use."""
    if not path.exists():
        try:
            generate_key_file(path)
        except FileExistsError:
            pass  # another process created it first
    return load_signer(path, name)
