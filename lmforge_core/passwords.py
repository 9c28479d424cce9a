"""Salted password hashes of dashboard reviewers: argon2id (argon2-cffi), verified in constant time."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher()  # argon2id with the library's current recommended cost
MIN_PASSWORD = 12


def hash_password(password: str) -> str:
    """A new salted argon2id hash of ``password`` (refuses short passwords)."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a reviewer password needs at least {MIN_PASSWORD} characters")
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches ``password_hash``; a malformed hash is a mismatch, never an error."""
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
