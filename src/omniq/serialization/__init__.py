"""Codecs (json, msgpack, pickle on msgspec) and optional HMAC signing of stored bytes."""

from omniq.serialization.codecs import EXTENSIONS, Serializer, codec_for_extension

__all__ = ["EXTENSIONS", "Serializer", "codec_for_extension"]
