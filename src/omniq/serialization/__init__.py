"""Codecs (json, msgpack, pickle on msgspec) and optional HMAC signing of stored bytes."""

from omniq.serialization.codecs import EXTENSIONS, Serializer, codec_for_extension
from omniq.serialization.portable import check_arguments

__all__ = ["EXTENSIONS", "Serializer", "check_arguments", "codec_for_extension"]
