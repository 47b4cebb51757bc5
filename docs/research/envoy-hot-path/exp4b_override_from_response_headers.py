"""Q4 follow-up: mode_override sent in the RESPONSE-headers reply.
Cluster p: provider filter config request SKIP/NONE, response headers SEND, response body NONE,
allow_mode_override. Response-headers reply overrides response_body_mode:
  /sse_fd -> FULL_DUPLEX_STREAMED, /sse_st -> STREAMED, /json_buf -> BUFFERED.
Cluster q: same but the FILTER CONFIG has response_body_mode FULL_DUPLEX_STREAMED (+trailers SEND);
the reply overrides to NONE -> expected ignored (override is skipped when the config is FULL_DUPLEX)."""
import asyncio
import httpx
import harness
from harness import bootstrap, cont, extproc_cluster, extproc_filter, pb, ports, run, streamed, upstream_cluster, LOG

OV = {"sse_fd": "FULL_DUPLEX_STREAMED", "sse_st": "STREAMED", "json_buf": "BUFFERED", "q": "NONE"}

def build(sock_dir, up):
    lp, ap = ports()
    base = {"request_header_mode": "SKIP", "request_body_mode": "NONE", "response_header_mode": "SEND"}
    p = extproc_filter("provider:p", {**base, "response_body_mode": "NONE"}, allow_mode_override=True)
    q = extproc_filter("provider:q", {**base, "response_body_mode": "FULL_DUPLEX_STREAMED", "response_trailer_mode": "SEND"}, allow_mode_override=True)
    routes = [{"name": "q", "match": {"prefix": "/q/"}, "route": {"cluster": "q", "prefix_rewrite": "/sse/"}},
              {"name": "sse", "match": {"prefix": "/sse"}, "route": {"cluster": "p", "prefix_rewrite": "/sse/"}},
              {"name": "json", "match": {"prefix": "/json"}, "route": {"cluster": "p"}}]
    return bootstrap(lp, ap, [], routes, [extproc_cluster(sock_dir, 1), upstream_cluster("p", up, [p]), upstream_cluster("q", up, [q])])

def handler(stage, s, req, st):
    kind = s["kind"]
    if kind == "response_headers":
        r = cont(kind)
        name = st["name"]
        r.mode_override.response_body_mode = getattr(pb.ProcessingResponse().mode_override.__class__, OV[name])
        if OV[name] == "FULL_DUPLEX_STREAMED":
            r.mode_override.response_trailer_mode = r.mode_override.SEND
        st["fd"] = OV[name] == "FULL_DUPLEX_STREAMED" or stage == "provider:q"
        return [r]
    if kind == "response_body":
        b = req.response_body
        if st.get("fd"):
            return [streamed(kind, b.body, b.end_of_stream)]
    return [cont(kind)]

NAMES = {}
def client(port):
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for path, name in (("/sse_fd", "sse_fd"), ("/sse_st", "sse_st"), ("/json_buf", "json_buf"), ("/q/x", "q")):
            NAMES["next"] = name
            n0 = len(LOG)
            r = c.post(path, content=b"{}")
            out.append((path, r.status_code, len(r.content), [e["kind"] for e in LOG[n0:]]))
    return out

orig = handler
def handler2(stage, s, req, st):
    st.setdefault("name", NAMES["next"])
    return orig(stage, s, req, st)

async def main():
    res, env = await run(build, handler2, client)
    for path, code, n, kinds in res:
        print(path, code, "bytes", n, "messages", len(kinds), kinds)

asyncio.run(main())
