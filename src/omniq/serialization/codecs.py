"""Encode models to bytes and back, in the configured format, optionally signed.

Every stored file name ends in its format's extension, so a reader decodes each file by what it
is, not by what the reader is configured to write. Pickle files are decoded only by a serializer
whose format is ``pickle``: loading a pickle runs code, so it must be opted into.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any, TypeVar

import msgspec

from omniq.exceptions import ConfigError, SerializationError, SignatureError

T = TypeVar("T")

EXTENSIONS: dict[str, str] = {"json": ".json", "msgpack": ".msgpack", "pickle": ".pickle"}
_FORMAT_BY_EXT = {ext: fmt for fmt, ext in EXTENSIONS.items()}
_SIG_PREFIX = b"#omniq-hmac-sha256:"
_SIG_LEN = len(_SIG_PREFIX) + 64 + 1  # prefix, hex digest, newline


def codec_for_extension(name: str) -> str | None:
    """The format whose extension ``name`` ends with, or ``None``."""
    dot = name.rfind(".")
    return _FORMAT_BY_EXT.get(name[dot:]) if dot >= 0 else None


class Serializer:
    """Turns models into stored bytes and back.

    ``encode`` fails with ``SerializationError`` before anything is written when a value (a task
    argument, a result) cannot be represented in the format. With a ``secret_key`` every encoded
    object carries an HMAC-SHA256 header line and ``decode`` refuses unsigned or altered bytes.
    """

    def __init__(self, format: str = "json", secret_key: str | bytes | None = None) -> None:
        if format not in EXTENSIONS:
            raise ConfigError(
                f"unknown serialization format {format!r}: use one of {', '.join(EXTENSIONS)}"
            )
        self.format = format
        self.extension = EXTENSIONS[format]
        self._key = secret_key.encode() if isinstance(secret_key, str) else secret_key
        self._json_encoder = msgspec.json.Encoder()
        self._msgpack_encoder = msgspec.msgpack.Encoder()
        self._decoders: dict[tuple[str, Any], Any] = {}

    @property
    def signs(self) -> bool:
        return self._key is not None

    @property
    def appends(self) -> bool:
        """Whether a newer document can be appended to an object of this format instead of
        rewriting it: unsigned JSON, read as JSON Lines (``decode`` takes the last complete
        line). Compact JSON never holds a raw newline, so the lines cannot be confused."""
        return self.format == "json" and self._key is None

    def appends_to(self, name: str) -> bool:
        """Whether ``appends`` holds for the object ``name``, which is read by its extension."""
        return self.appends and codec_for_extension(name) == "json"

    def appended(self, obj: Any) -> bytes:
        """The bytes to append to an object to make ``obj`` its state (see ``appends``)."""
        return b"\n" + self.encode(obj)

    def encode(self, obj: Any) -> bytes:
        try:
            if self.format == "json":
                data = self._json_encoder.encode(obj)
            elif self.format == "msgpack":
                data = self._msgpack_encoder.encode(obj)
            else:
                data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except (
            TypeError, ValueError, OverflowError, RecursionError, pickle.PicklingError,
            AttributeError,
        ) as exc:  # fmt: skip
            raise SerializationError(
                f"cannot serialize {type(obj).__name__} as {self.format}: {exc}"
            ) from exc
        if self._key is None:
            return data
        return _SIG_PREFIX + self._sign(data).encode() + b"\n" + data

    def decode(self, data: bytes, type: type[T], name: str = "") -> T:
        """Decode bytes read from the object ``name`` (its extension picks the format)."""
        fmt = codec_for_extension(name) or self.format
        if data.startswith(_SIG_PREFIX):
            signature, data = data[len(_SIG_PREFIX) : _SIG_LEN - 1], data[_SIG_LEN:]
            if self._key is not None and not hmac.compare_digest(
                signature, self._sign(data).encode()
            ):
                raise SignatureError(f"signature mismatch (tampered or other key): {name}")
        elif self._key is not None:
            raise SignatureError(f"unsigned data refused because a secret key is set: {name}")
        try:
            if fmt == "pickle":
                if self.format != "pickle":
                    raise SerializationError(
                        f"refusing to unpickle {name}: set serialization_format='pickle' to "
                        "allow loading pickles (it runs code)"
                    )
                obj = pickle.loads(data)
                if not isinstance(obj, type):
                    raise SerializationError(f"{name} holds a {obj.__class__.__name__}")
                return obj
            decoder = self._decoder(fmt, type)
            if fmt == "json" and b"\n" in data:
                return _last_document(decoder, data)  # type: ignore[no-any-return]
            return decoder.decode(data)  # type: ignore[no-any-return]
        except SerializationError:
            raise
        except Exception as exc:  # any decoder failure means unreadable data
            raise SerializationError(f"cannot decode {name or 'data'} as {fmt}: {exc}") from exc

    def _decoder(self, fmt: str, type: Any) -> Any:
        key = (fmt, type)
        decoder = self._decoders.get(key)
        if decoder is None:
            module = msgspec.json if fmt == "json" else msgspec.msgpack
            decoder = self._decoders[key] = module.Decoder(type)
        return decoder

    def _sign(self, data: bytes) -> str:
        assert self._key is not None
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()


# An appended object holds one document per append; more than this many lines is not ours.
_MAX_LINES = 4


def _is_json(line: bytes) -> bool:
    try:
        msgspec.json.decode(line)
    except Exception:
        return False
    return True


def _last_document(decoder: Any, data: bytes) -> Any:
    """The state of a JSON object that may have had documents appended (``Serializer.appends``):
    the last line that decodes. A writer killed in the middle of an append leaves a partial
    last line, and the document before it holds. The whole text is tried too, so that JSON a
    person wrote with line breaks still reads."""
    end = len(data)
    for _ in range(_MAX_LINES):
        cut = data.rfind(b"\n", 0, end)
        if cut < 0:
            break
        line = data[cut + 1 : end]
        if line.strip():
            try:
                return decoder.decode(line)
            except Exception:
                if _is_json(line):  # a whole document this reader cannot take: unreadable
                    raise
                # a line cut short (or the end of JSON written with line breaks): go back
        try:
            return decoder.decode(data[:end])
        except Exception:
            end = cut
    return decoder.decode(data[:end])
