"""Q7 follow-up: is the segfault with >64 KiB forwarded metadata specific to metadata, or does any
>64 KiB ProcessingRequest from an UPSTREAM ext_proc crash 1.40? Sends bodies of 10 KB .. 1 MB
through the exp3 provider-stage config on the /inherit route (headers SEND + body BUFFERED) and
the /skip route (first message = the body)."""
import asyncio, sys
import httpx
import harness
from exp3_provider_stage import build, handler
from harness import run, UPSTREAM

SIZES = [10_000, 70_000, 300_000, 1_000_000]

def client(port):
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as c:
        for route in ("/inherit/x", "/skip/x"):
            for n in SIZES:
                try:
                    r = c.post(route, content=b'{"p":"' + b"x" * n + b'"}', headers={"content-type": "application/json"})
                    out.append((route, n, r.status_code))
                except httpx.HTTPError as e:
                    out.append((route, n, repr(e)[:80]))
                    return out
    return out

async def main():
    res, env = await run(build, handler, client)
    for r in res: print(r)
    print("segfault:", any("Segmentation" in l for l in env.errors()))

asyncio.run(main())
