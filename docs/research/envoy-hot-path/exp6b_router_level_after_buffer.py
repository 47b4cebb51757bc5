"""exp6b = exp6 plus a SECOND router-level ext_proc ('resp_extproc', all SKIP/NONE) placed AFTER the
buffer filter; route ns gives it response_body BUFFERED per route. Does it see the re-selected route?
exp6 docstring follows.

Q6: per-route ExtProcPerRoute for the router-level filter and for the cluster's upstream ext_proc,
when the route is chosen by the policy body reply (re-route via metadata + clear_route_cache).

Router-level 'policy' ext_proc: request headers SKIP + body BUFFERED (+ buffer filter), responses NONE.
Upstream 'provider_extproc' in cluster p: filter config = everything SKIP/NONE.
Routes (matched on sg.route metadata set by the policy body reply):
  ns:  per-route policy override response_body_mode BUFFERED;
       per-route provider override response_body_mode BUFFERED
  s:   per-route provider override response_body_mode FULL_DUPLEX_STREAMED (no trailer SEND)
  pre: matched at headers time already (path /pre/), per-route policy override response_body BUFFERED
  unrouted (catch-all): direct 500
Question: which per-route config applies to each filter -- the route at decodeHeaders time or the
re-selected one?
"""

import asyncio

import httpx
from google.protobuf import struct_pb2

import harness
from harness import API, T, bootstrap, cont, extproc_cluster, extproc_filter, hm, pb, ports, run, streamed, upstream_cluster, LOG

PER = f"{API}.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
NONE = {"request_header_mode": "SKIP", "request_body_mode": "NONE", "response_header_mode": "SKIP", "response_body_mode": "NONE"}


def m(**kw):
    return {**NONE, **kw}


def build(sock_dir: str, up: int) -> dict:
    lp, ap = ports()
    pol = extproc_filter("policy", m(request_body_mode="BUFFERED"),
                         metadata_options={"receiving_namespaces": {"untyped": ["sg"]}})
    pol["name"] = "policy_extproc"
    buf = {"name": "envoy.filters.http.buffer",
           "typed_config": {T: f"{API}.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 1048576}}
    resp = extproc_filter("response", NONE)
    resp["name"] = "resp_extproc"
    prov = extproc_filter("provider:p", NONE)
    prov["name"] = "provider_extproc"

    def per(**kw):
        return {T: PER, "overrides": {"processing_mode": m(**kw)}}

    def md(v):
        return [{"filter": "sg", "path": [{"key": "route"}], "value": {"string_match": {"exact": v}}}]

    routes = [
        {"name": "pre", "match": {"prefix": "/pre/"}, "route": {"cluster": "p"},
         "typed_per_filter_config": {"policy_extproc": per(response_body_mode="BUFFERED")}},
        {"name": "ns", "match": {"prefix": "/", "dynamic_metadata": md("ns")}, "route": {"cluster": "p"},
         "typed_per_filter_config": {"policy_extproc": per(response_body_mode="BUFFERED"),
                                     "provider_extproc": per(response_body_mode="BUFFERED"),
                                     "resp_extproc": per(response_body_mode="BUFFERED")}},
        {"name": "s", "match": {"prefix": "/", "dynamic_metadata": md("s")}, "route": {"cluster": "p"},
         "typed_per_filter_config": {"provider_extproc": per(response_body_mode="FULL_DUPLEX_STREAMED")}},
        {"name": "unrouted", "match": {"prefix": "/"}, "direct_response": {"status": 500}},
    ]
    return bootstrap(lp, ap, [pol, buf, resp], routes, [extproc_cluster(sock_dir, 1), upstream_cluster("p", up, [prov])])


def handler(stage, s, req, st):
    kind = s["kind"]
    if stage == "policy" and kind == "request_body":
        r = pb.ProcessingResponse()
        r.request_body.response.header_mutation.CopyFrom(hm({"x-dummy": "1"}))
        r.request_body.response.clear_route_cache = True
        route = "s" if b"stream" in req.request_body.body else "ns"
        sm = struct_pb2.Struct()
        sm.update({"sg": {"route": route}})
        r.dynamic_metadata.CopyFrom(sm)
        return [r]
    if kind == "response_body" and st.get("body_mode", {}).get("response_body") == "FULL_DUPLEX_STREAMED":
        b = req.response_body
        return [streamed("response_body", b.body, b.end_of_stream)]
    return [cont(kind)]


def client(port: int):
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for path, body in (("/json", b'{"m":1}'), ("/sse", b'{"stream":true}'), ("/pre/json", b'{"m":1}')):
            n0 = len(LOG)
            r = c.post(path, content=body, headers={"content-type": "application/json"})
            out.append((path, r.status_code, len(r.content), [(e["stage"], e["kind"]) for e in LOG[n0:]]))
    return out


async def main():
    res, env = await run(build, handler, client)
    for path, code, n, msgs in res:
        print(f"{path}: {code} bytes={n}")
        counts = {}
        for stg, kind in msgs:
            counts[(stg, kind)] = counts.get((stg, kind), 0) + 1
        for k, v in counts.items():
            print("    ", k, v)
    print("\n".join(env.access()))


asyncio.run(main())
