"""Q7: N ext_proc endpoints (Unix sockets) in the ext_proc cluster, and policy -> provider state via
dynamic metadata.

- extproc cluster: 3 pipe endpoints (ROUND_ROBIN). Which socket does each stream land on?
- policy (router level): request headers SKIP + body BUFFERED (+ buffer filter, see exp1b);
  body reply writes dynamic metadata sg = {rid, model, big: <N KB string>} (receiving_namespaces sg).
- provider (cluster upstream filter): request headers SEND, body NONE, response headers SKIP,
  response body BUFFERED; metadata_options.forwarding_namespaces.untyped [sg];
  response_attributes response.code / content-type: do they arrive on the body message?
  Provider replies CONTINUE_AND_REPLACE using what metadata carried (no shared process state).
"""

import asyncio
import os
import sys

import httpx
from google.protobuf import struct_pb2

import harness
from harness import (API, T, bootstrap, cont, dump_log, extproc_filter, extproc_cluster, hm, pb, ports, run,
                     upstream_cluster, UPSTREAM, LOG)

harness.LIMIT = 500
BIG = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000


def build(sock_dir: str, up: int) -> dict:
    lp, ap = ports()
    pol = extproc_filter("policy", {"request_header_mode": "SKIP", "request_body_mode": "BUFFERED",
                                    "response_header_mode": "SKIP", "response_body_mode": "NONE"},
                         request_attributes=["request.path"],
                         metadata_options={"receiving_namespaces": {"untyped": ["sg"]}})
    buf = {"name": "envoy.filters.http.buffer",
           "typed_config": {T: f"{API}.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 1048576}}
    prov = extproc_filter("provider:p", {"request_header_mode": "SEND", "request_body_mode": "NONE",
                                         "response_header_mode": "SKIP", "response_body_mode": "BUFFERED"},
                          metadata_options={"forwarding_namespaces": {"untyped": [] if os.environ.get("NO_FWD") else ["sg"]},
                                            "receiving_namespaces": {"untyped": ["sg_up"]}},
                          response_attributes=["response.code", "response.headers['content-type']"],
                          forward_rules={"allowed_headers": {"patterns": [{"exact": ":path"}]}})
    prov["name"] = "provider_extproc"
    routes = [
        {"name": "b", "match": {"prefix": "/", "dynamic_metadata": [{"filter": "sg", "path": [{"key": "route"}], "value": {"string_match": {"exact": "b"}}}]},
         "route": {"cluster": "p"}},
        {"name": "unrouted", "match": {"prefix": "/"}, "direct_response": {"status": 500}},
    ]
    return bootstrap(lp, ap, [pol, buf], routes, [extproc_cluster(sock_dir, 3), upstream_cluster("p", up, [prov])])


def handler(stage, s, req, st):
    kind = s["kind"]
    if stage == "policy" and kind == "request_body":
        r = pb.ProcessingResponse()
        r.request_body.response.header_mutation.CopyFrom(hm({"x-dummy": "1"}))
        r.request_body.response.clear_route_cache = True
        md = struct_pb2.Struct()
        md.update({"sg": {"route": "b", "rid": f"rid-{s['sid']}", "model": "gpt-x", "big": "x" * BIG}})
        r.dynamic_metadata.CopyFrom(md)
        return [r]
    if stage.startswith("provider") and kind == "request_headers":
        sg = req.metadata_context.filter_metadata.get("sg")
        rid = sg.fields["rid"].string_value if sg else "NO-METADATA"
        big = len(sg.fields["big"].string_value) if sg else -1
        s["metadata_summary"] = {"rid": rid, "big_len": big}
        r = pb.ProcessingResponse()
        c = r.request_headers.response
        c.status = pb.CommonResponse.CONTINUE_AND_REPLACE
        c.header_mutation.CopyFrom(hm({":path": "/json", "x-rid": rid}))
        c.body_mutation.body = b'{"from_metadata": "%s"}' % rid.encode()
        return [r]
    if stage.startswith("provider") and kind == "response_body":
        r = pb.ProcessingResponse()
        r.response_body.response.SetInParent()
        md = struct_pb2.Struct()
        md.update({"sg_up": {"usage": 7}})
        r.dynamic_metadata.CopyFrom(md)
        return [r]
    return [cont(kind)]


def client(port: int):
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for i in range(6):
            n0 = len(UPSTREAM)
            r = c.post("/v1/chat/completions", content=b'{"model":"m"}', headers={"content-type": "application/json"})
            out.append((r.status_code, UPSTREAM[n0]["headers"].get("x-rid") if len(UPSTREAM) > n0 else None))
    return out


async def main():
    res, env = await run(build, handler, client, nprocs=3)
    print("client results (status, x-rid upstream saw):", res)
    for e in LOG:
        extra = {k: e[k] for k in ("attributes", "metadata_summary") if k in e}
        print(f"sid={e['sid']} stage={e['stage']} sock={e['sock']} {e['kind']} {extra}")
    print("\n".join(l[:200] for l in env.access()))
    print("\n".join(l for l in env.errors() if "[main]" not in l)[-1500:])


asyncio.run(main())
