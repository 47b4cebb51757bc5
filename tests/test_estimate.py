"""Prompt and output token estimates, checked against independent sources.

Expectations come from tiktoken called directly, the overhead OpenAI's
cookbook gives for chat messages (3 tokens a message, 3 to prime the reply),
and the image and PDF costs the providers document, never from the
implementation's own constants. Media are real files built here with the
standard library (``wave``, ``zlib``) or byte by byte from their specs.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import wave
import zlib
from typing import Any

import pytest
import tiktoken

from extproc import tokenizer
from extproc.apis import ClientApi
from extproc.estimate import anthropic_image, openai_image, output_tokens, prompt_tokens

# The encoding file is read by the project's loader (no download); counting is tiktoken's own.
ENC: tiktoken.Encoding = tokenizer.load("o200k_base")


def n(text: str) -> int:
    return len(ENC.encode_ordinary(text))


count = n
M, PRIMER = 3, 3  # OpenAI cookbook, "How to count tokens with tiktoken"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x00" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def jpeg(width: int, height: int) -> bytes:
    # SOI, an APP1 (EXIF) segment of 20 KB before the frame header, then SOF0.
    app1 = b"\xff\xe1" + struct.pack(">H", 20_002) + b"E" * 20_000
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app1 + sof + b"\xff\xd9"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b";"


def webp(width: int, height: int) -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def pdf(pages: int) -> bytes:
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages)).encode()
    objs.append(b"<< /Type /Pages /Kids [" + kids + b"] /Count " + str(pages).encode() + b" >>")
    objs += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"] * pages
    body = b"%PDF-1.4\n" + b"".join(
        f"{i + 1} 0 obj\n".encode() + o + b"\nendobj\n" for i, o in enumerate(objs)
    )
    return body + b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"


def pdf_with_object_stream(pages: int) -> bytes:
    """PDF 1.5: the page objects packed in a compressed object stream."""
    packed = b" ".join([b"<< /Type /Page /Parent 2 0 R >>"] * pages)
    stream = zlib.compress(packed)
    return (
        b"%PDF-1.5\n1 0 obj\n<< /Type /ObjStm /N "
        + str(pages).encode()
        + b" /Filter /FlateDecode /Length "
        + str(len(stream)).encode()
        + b" >>\nstream\n"
        + stream
        + b"\nendstream\nendobj\n%%EOF\n"
    )


def wav(seconds: float, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(rate * seconds))
    return out.getvalue()


def chat(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": list(parts)}]}


def claude(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": "claude",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": list(blocks)}],
    }


def oa_tokens(body: dict[str, Any]) -> int:
    return prompt_tokens(ClientApi.OPENAI_CHAT, body, count)


def an_tokens(body: dict[str, Any]) -> int:
    return prompt_tokens(ClientApi.ANTHROPIC_MESSAGES, body, count)


# --- text, with OpenAI's chat overhead --------------------------------------------


def test_text_messages() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
    }
    expected = 2 * M + n("You are terse.") + n("What is the capital of France?") + PRIMER
    assert oa_tokens(body) == expected


def test_text_that_spells_a_special_token_is_text() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "<|endoftext|>"}]}
    assert oa_tokens(body) == M + n("<|endoftext|>") + PRIMER


def test_embeddings() -> None:
    api = ClientApi.OPENAI_EMBEDDINGS
    assert prompt_tokens(api, {"input": "The food was delicious"}, count) == n(
        "The food was delicious"
    )
    assert prompt_tokens(api, {"input": ["one", "two three"]}, count) == n("one") + n("two three")
    assert prompt_tokens(api, {"input": [[1, 2, 3], [4, 5]]}, count) == 5


# --- images: the providers' documented costs -------------------------------------


def test_openai_image_costs_match_the_documented_examples() -> None:
    # OpenAI vision guide: 1024 x 1024 high detail = 765; 2048 x 4096 = 1105; low = 85.
    assert openai_image((1024, 1024), "high") == 765
    assert openai_image((2048, 4096), "high") == 1105
    assert openai_image((4096, 8192), "low") == 85


def test_anthropic_image_costs_match_the_documented_table() -> None:
    # Anthropic vision guide: tokens = width * height / 750; 1092 x 1092 ~ 1590.
    assert anthropic_image((1092, 1092)) == 1590
    assert anthropic_image((200, 200)) == 54
    # Larger images are scaled down first: never more than ~1,600.
    assert 1500 <= anthropic_image((8000, 8000)) <= 1600


@pytest.mark.parametrize("make", [png, jpeg, gif, webp], ids=["png", "jpeg", "gif", "webp"])
def test_image_size_is_read_from_the_header(make: Any) -> None:
    data = make(1092, 1092)
    oa = chat({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(data)}"}})
    # Any candidate may serve it: the dearer provider's cost (Anthropic's 1590 here).
    assert oa_tokens(oa) == M + 1590 + PRIMER
    an = claude(
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(data)}}
    )
    assert an_tokens(an) == M + 1590 + PRIMER


def test_small_images_cost_little_and_unknown_ones_the_maximum() -> None:
    small = chat({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(png(100, 100))}"}})
    assert oa_tokens(small) == M + 255 + PRIMER  # OpenAI: 85 + 170 x 1 tile > 100*100/750
    by_url = chat({"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}})
    assert oa_tokens(by_url) == M + 1600 + PRIMER
    garbage = claude(
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 5000}}
    )
    assert an_tokens(garbage) == M + 1600 + PRIMER


# --- documents ----------------------------------------------------------------


def test_a_text_document_costs_its_text() -> None:
    text = "All work and no play makes Jack a dull boy. " * 3000  # 30,000 words
    body = claude(
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": text},
            "title": "The manuscript",
        }
    )
    assert an_tokens(body) == M + n(text) + n("The manuscript") + PRIMER
    assert n(text) > 30_000


def test_pdf_costs_per_page() -> None:
    # Anthropic PDF support: each page is billed as its text (up to ~3,000
    # tokens) plus the page as an image (up to ~1,600).
    for make in (pdf, pdf_with_object_stream):
        body = claude(
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": b64(make(7))},
            }
        )
        assert an_tokens(body) == M + 7 * (3000 + 1600) + PRIMER
    file_part = chat(
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64," + b64(pdf(3))}}
    )
    assert oa_tokens(file_part) == M + 3 * 4600 + PRIMER


def test_content_document_and_tool_results_count_what_they_hold() -> None:
    body = claude(
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "alpha beta"}]}},
        {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "42 degrees"}]},
    )
    assert an_tokens(body) == M + n("alpha beta") + n("42 degrees") + PRIMER


# --- audio --------------------------------------------------------------------


def test_wav_audio_costs_by_its_length() -> None:
    # OpenAI: audio input is one token per 100 ms.
    body = chat({"type": "input_audio", "input_audio": {"data": b64(wav(12.0)), "format": "wav"}})
    assert oa_tokens(body) == M + 120 + PRIMER


def test_compressed_audio_is_assumed_long() -> None:
    data = b"\xff\xfb" + b"\x00" * 40_000  # 40 KB of MP3: 20 s at 16 kbit/s, 2.5 s at 128
    body = chat({"type": "input_audio", "input_audio": {"data": b64(data), "format": "mp3"}})
    assert oa_tokens(body) >= M + 200 + PRIMER


# --- tools ------------------------------------------------------------------------


def test_tool_definitions_and_calls_count_their_json() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather now",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    body = {
        "model": "gpt-4o",
        "messages": [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        ],
        "tools": tools,
    }
    schema = json.dumps(tools, separators=(",", ":"))
    expected = 2 * M + n("get_weather") + n('{"city":"Paris"}') + n("18C") + PRIMER + n(schema)
    assert oa_tokens(body) == expected
    # Every word of a schema is prompt: far more than its names and descriptions.
    assert n(schema) > n("get_weather") + n("Weather now") + n("city")


# --- output reserved ----------------------------------------------------------------


def test_output_reserved_is_the_requests_limit_or_the_default() -> None:
    chat_api, messages = ClientApi.OPENAI_CHAT, ClientApi.ANTHROPIC_MESSAGES
    assert output_tokens(chat_api, {"max_completion_tokens": 300, "max_tokens": 9}, 4096) == 300
    assert output_tokens(chat_api, {"max_tokens": 200, "n": 3}, 4096) == 600
    assert output_tokens(chat_api, {}, 4096) == 4096
    assert output_tokens(messages, {"max_tokens": 1024}, 4096) == 1024
    assert output_tokens(ClientApi.OPENAI_EMBEDDINGS, {"input": "x"}, 4096) == 0


# --- the Responses API ---------------------------------------------------------


def test_responses_input_counts_as_messages() -> None:
    api = ClientApi.OPENAI_RESPONSES
    text = {"model": "m", "input": "What is the capital of France?"}
    assert prompt_tokens(api, text, count) == M + n("What is the capital of France?") + PRIMER
    image = f"data:image/png;base64,{b64(png(100, 100))}"
    items = {
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Look"}]},
            {"role": "user", "content": [{"type": "input_image", "image_url": image}]},
            {"type": "function_call_output", "call_id": "c", "output": "sunny"},
        ],
    }
    got = prompt_tokens(api, items, count)
    # The image costs its tiles, not its base64 as text.
    assert got < 3 * M + PRIMER + M + 300 + n("Look") + n("sunny") + n("Be brief.") + 20
    assert got >= 3 * M + PRIMER + M + 255 + n("Look") + n("sunny") + n("Be brief.")
    by_id = {"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}
    assert prompt_tokens(api, by_id, count) >= 10 * 4600  # unseen: the stated maximum
    tools = {"model": "m", "input": "x", "tools": [{"type": "function", "name": "get_weather"}]}
    assert prompt_tokens(api, tools, count) > prompt_tokens(api, {"model": "m", "input": "x"}, count)
    assert output_tokens(api, {"max_output_tokens": 300}, 4096) == 300
    assert output_tokens(api, {}, 4096) == 4096
