"""Q4: response-side modes for the provider stage (upstream filter), counting messages.

Cluster 'p' upstream chain: ext_proc 'provider_extproc' with
  request headers SEND, request body NONE, response headers SKIP, response body BUFFERED,
  allow_mode_override: true.
The request-headers reply is CONTINUE_AND_REPLACE (key + body) and, per path, a mode_override:
  /json         no override: response body BUFFERED, headers SKIP -> 1 response message
  /sse_fd       override response_body_mode FULL_DUPLEX_STREAMED (+ trailer SEND)
  /sse_streamed override response_body_mode STREAMED
  /sse_none     override response_body_mode NONE (pass-through)
  /err          upstream 400 JSON, BUFFERED rewrite into another error format
Cluster 'o' (route /obs/): blocking ext_proc (request headers only, CONTINUE_AND_REPLACE) followed by
a second ext_proc in observability_mode with response body STREAMED: what arrives, and replies ignored.
Body replies rewrite the body (prefix 'REWRITTEN:'), so the client shows what applied.
"""

import asyncio

import httpx

import harness
from harness import (API, T, bootstrap, cont, dump_log, extproc_filter, extproc_cluster, hm, pb, ports, run,
                     upstream_cluster, streamed, UPSTREAM)

harness.LIMIT = 200


def build(sock_dir: str, up: int) -> dict:
    lp, ap = ports()
    f = extproc_filter("provider:p", {"request_header_mode": "SEND", "request_body_mode": "NONE",
                                      "response_header_mode": "SKIP", "response_body_mode": "BUFFERED"},
                       allow_mode_override=True)
    f["name"] = "provider_extproc"
    blocking = extproc_filter("provider:o", {"request_header_mode": "SEND", "request_body_mode": "NONE",
                                             "response_header_mode": "SKIP", "response_body_mode": "NONE"})
    blocking["name"] = "provider_extproc"
    obs = extproc_filter("observe:o", {"request_header_mode": "SKIP", "request_body_mode": "NONE",
                                       "response_header_mode": "SEND", "response_body_mode": "STREAMED",
                                       "response_trailer_mode": "SEND"},
                         observability_mode=True)
    obs["name"] = "observer"
    routes = [
        {"name": "obs", "match": {"prefix": "/obs/"}, "route": {"cluster": "o"}},
        {"name": "p", "match": {"prefix": "/"}, "route": {"cluster": "p"}},
    ]
    return bootstrap(lp, ap, [], routes, [extproc_cluster(sock_dir, 1), upstream_cluster("p", up, [f]),
                                          upstream_cluster("o", up, [blocking, obs])])


OVERRIDES = {
    "sse_fd": {"response_body_mode": "FULL_DUPLEX_STREAMED", "response_trailer_mode": "SEND"},
    "sse_streamed": {"response_body_mode": "STREAMED"},
    "sse_none": {"response_body_mode": "NONE"},
}


def handler(stage, s, req, st):
    kind = s["kind"]
    if kind == "request_headers":
        path = s["headers"][":path"]
        name = path.strip("/").split("/")[-1]
        st["name"] = name
        r = pb.ProcessingResponse()
        c = r.request_headers.response
        c.status = pb.CommonResponse.CONTINUE_AND_REPLACE
        up_path = {"json": "/json", "err": "/status/400"}.get(name, "/sse")
        c.header_mutation.CopyFrom(hm({":path": up_path, "authorization": "Bearer k"}))
        c.body_mutation.body = b'{"translated": true}'
        if name in OVERRIDES:
            mo = r.mode_override
            for k, v in OVERRIDES[name].items():
                setattr(mo, k, getattr(type(mo), v))
        return [r]
    if kind == "response_body":
        m = req.response_body
        mode = st.get("body_mode", {}).get("response_body")
        if st.get("name") == "sse_fd":
            return [streamed("response_body", (b"REWRITTEN:" + m.body) if m.body else b"", m.end_of_stream)]
        r = pb.ProcessingResponse()
        r.response_body.response.body_mutation.body = b"REWRITTEN:" + m.body
        r.response_body.response.header_mutation.CopyFrom(hm({"x-from-body-reply": "1"}))
        return [r]
    return [cont(kind)]


def client(port: int):
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for p in ("/json", "/err", "/sse_fd", "/sse_streamed", "/sse_none", "/obs/sse"):
            chunks = []
            with c.stream("POST", p, content=b'{"model":"m"}', headers={"content-type": "application/json"}) as r:
                for ch in r.iter_raw():
                    chunks.append(ch)
                out.append((p, r.status_code, {k: v for k, v in r.headers.items() if k in ("content-length", "transfer-encoding", "x-from-body-reply", "content-type")},
                            len(chunks), b"".join(chunks)[:160]))
    return out


async def main():
    res, env = await run(build, handler, client)
    for p, code, h, n, body in res:
        print(f"{p}: {code} {h} client_reads={n} body={body!r}")
    dump_log("ext_proc messages")
    print("\n".join(env.access()))
    print("\n".join(l for l in env.errors() if "warning][main]" not in l)[-2000:])


asyncio.run(main())
