"""The demo app: the official OpenAI SDK, configured only by what the injector sets.

It never sees a provider key (OPENAI_API_KEY is the injector's placeholder) and
knows nothing about sidegate: OPENAI_BASE_URL points it at the sidecar.
"""

import os
import sys
import time

import openai

client = openai.OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY come from the environment
model = os.environ.get("DEMO_MODEL", "fast")
once = "--once" in sys.argv

while True:
    try:
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Say hello from the sidecar."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks, text = 0, []
        for chunk in stream:
            chunks += 1
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
        print(f"ok streamed {chunks} chunks via {client.base_url}: {''.join(text)!r}", flush=True)
        status = 0
    except openai.APIError as e:
        print(f"error: {e}", flush=True)
        status = 1
    if once:
        sys.exit(status)
    time.sleep(5)
