"""Provider keys at rest: Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) under a
key derived with HKDF-SHA256 from the server's secret, the one that signs its tokens
(`SECRET_KEY`, else the key file generated in the data directory; see
`gathering.auth.signing_key`). Every instance that calls a provider needs the same secret.
"""

from __future__ import annotations

import asyncio
import base64
import functools

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gathering.auth.signing_key import key_file, load_signing_key
from gathering.config import Settings, get_settings
from gathering.errors import ProviderKeyUnreadableError

# Binds the derived key to this use: the same secret signs tokens with another key.
_PURPOSE = b"gathering catalog: provider keys, v1"
_SALT = b"gathering.catalog.crypto"
MAX_KEY_CHARS = 4096


@functools.lru_cache(maxsize=8)
def key_cipher(secret: bytes) -> Fernet:
    """The cipher of provider keys for the server secret `secret`."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_PURPOSE).derive(secret)
    return Fernet(base64.urlsafe_b64encode(derived))


_secrets: dict[str, bytes] = {}


async def server_cipher(settings: Settings | None = None) -> Fernet:
    """The cipher for the secret of `settings` (an app's own, as its `Database.settings`;
    default: the process's settings). A key file is read once per process, off the event
    loop."""
    settings = settings or get_settings()
    if settings.secret_key is not None:
        return key_cipher(settings.secret_key.get_secret_value().encode())
    where = str(key_file(settings))
    if where not in _secrets:
        _secrets[where] = await asyncio.to_thread(load_signing_key, settings)
    return key_cipher(_secrets[where])


def encrypt_key(cipher: Fernet, key: str) -> bytes:
    """The token stored for `key`."""
    return cipher.encrypt(key.encode())


def decrypt_key(cipher: Fernet, token: bytes, provider: str) -> str:
    """The key stored as `token` for `provider`; `ProviderKeyUnreadableError` when this server's
    secret is not the one it was stored with."""
    try:
        return cipher.decrypt(bytes(token)).decode()
    except (InvalidToken, UnicodeDecodeError):
        raise ProviderKeyUnreadableError(
            f"the key stored for provider {provider!r} cannot be decrypted with this server's "
            "secret (it was stored under another SECRET_KEY)",
            hint="give every instance the SECRET_KEY it had when the key was stored, or store "
            "the key again (PATCH /providers/{id} with the key)",
            details={"provider": provider},
        ) from None


def mask_key(key: str) -> str:
    """All that is ever shown of a key: "sk-...abcd" (only "..." for a short one)."""
    if len(key) < 20:
        return "..."
    return f"{key[:3]}...{key[-4:]}"
